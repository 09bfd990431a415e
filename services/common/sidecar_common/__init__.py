"""What the sidecar services share: the server skeleton (`app`, `cli`), settings base, logging,
HTTP errors and metrics, and the audio conversions.

Never imports livekit, so a sidecar image stays small.
"""

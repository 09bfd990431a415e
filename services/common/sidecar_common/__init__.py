"""What the sidecar services share: settings base, health/metrics, audio conversion.

Never imports livekit, so a sidecar image stays small.
"""

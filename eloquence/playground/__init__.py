"""The browser playground: talk to the coach from a page.

- `host`: `eloquence playground`, the process hosting local sessions over peer-to-peer WebRTC
  (aiortc), one AgentSession per browser peer;
- `audio`: the peer's tracks as the session's `AudioInput` and real-time `AudioOutput`;
- `web`: the page and its signalling on the API (`/playground`);
- `browser`: drives the page in headless Chromium (tests, `eloquence bench`).
"""

"""The server: ``halfsec serve``, one ``VoiceSession`` per client over engines loaded once.

``app`` (routes, start/stop) -> ``websocket`` (``/ws``) and ``webrtc`` (``/webrtc/offer``),
both built on ``connection`` (one client's conversation and its one sender loop);
``admission`` (token, Origin, session cap, message limits), ``options``, ``client_socket``
(locked writes, the guarded receive loop), ``reply_track`` (WebRTC reply audio),
``listen`` and ``page`` (the browser page).
The edge reuses ``admission``, ``client_socket`` and ``listen``."""

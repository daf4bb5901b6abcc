"""Logic: understand the transcript (intent + slots) and stream the reply text."""

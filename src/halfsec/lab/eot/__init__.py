"""End-of-turn evaluation: every endpointing policy replayed over labelled recordings with
real mid-utterance pauses, as curves of premature cut-offs against delay after the real
end of speech."""

"""T5X gin files for gemma-seqio (package, so gin finds `model/runner/configs/*.gin` from anywhere)."""

"""T5X gin files for gemma-seqio (package, so gin finds `model/configs/*.gin` from anywhere)."""

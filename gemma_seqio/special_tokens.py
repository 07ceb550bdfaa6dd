"""Gemma 1/2 special token ids and strings: the contract every package relies on.

Pure constants (no TensorFlow, no JAX), so the model and the converters can import them cheaply.

>>> PAD_ID, EOS_ID, BOS_ID, UNK_ID, START_OF_TURN_ID, END_OF_TURN_ID
(0, 1, 2, 3, 106, 107)
"""

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3
START_OF_TURN_ID = 106
END_OF_TURN_ID = 107

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

# Decoding stops on either (DESIGN: "Decoding stops on either").
STOP_IDS = (EOS_ID, END_OF_TURN_ID)

"""Model presets: the names ``model.preset`` accepts.

``tiny`` is built offline with random weights (fast tests); ``qwen2-audio-7b-instruct`` is the
real checkpoint from the Hugging Face hub.
"""

PRESETS = ("tiny", "qwen2-audio-7b-instruct")

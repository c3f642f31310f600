"""Model presets: the names ``model.preset`` accepts, and what each trains in full.

- ``whisper-tiny`` (default): Whisper tiny.en's pretrained encoder in Qwen2-Audio, with a new
  projector and a small new language model, built offline (qvad.model.presets.whisper_tiny).
- ``tiny``: the same architecture at toy width with random weights, for fast tests.
- ``qwen2-audio-7b-instruct``: the real checkpoint from the Hugging Face hub.
"""

PRESETS = ("whisper-tiny", "tiny", "qwen2-audio-7b-instruct")
LOCAL_PRESETS = ("whisper-tiny", "tiny")
"""Built offline into models/base (the others come from the hub)."""

FULLY_TRAINED = {
    "whisper-tiny": ("model.multi_modal_projector",),
    "tiny": ("model.audio_tower", "model.multi_modal_projector"),
    "qwen2-audio-7b-instruct": (),
}
"""Modules that have no pretrained weights and so train in full (peft ``modules_to_save``)."""

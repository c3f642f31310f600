"""Stage train: LoRA / QLoRA fine-tuning of Qwen2-Audio on the A/B speech question."""

from qvad.common.params import load_params
from qvad.model.train import train

if __name__ == "__main__":
    train(load_params())

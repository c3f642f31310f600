"""Stage group_split: write train/dev/test clip lists from the group plan made before mixing."""

from qvad.common.params import load_params
from qvad.data.group_split import group_split

if __name__ == "__main__":
    group_split(load_params())

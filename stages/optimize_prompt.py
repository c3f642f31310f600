"""Stage optimize_prompt: OPRO search of the user prompt for the trained model, on dev only."""

from qvad.common.params import load_params
from qvad.prompt_search.optimize_prompt import optimize_prompt

if __name__ == "__main__":
    optimize_prompt(load_params())

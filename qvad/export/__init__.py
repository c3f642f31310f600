"""``qvad export``: the trained detector as a folder others can serve.

``merge`` folds the adapter into the base (an ordinary ``Qwen2AudioForConditionalGeneration``
folder, loadable without peft), ``model_card`` writes its README.md from the run's params and
metrics, ``checks`` refuses inputs that cannot give a faithful export, and ``folder`` puts it
all in place atomically. docs/export.md is the user's view.
"""

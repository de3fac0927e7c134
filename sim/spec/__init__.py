"""The spec floor, the bottom of the house: what a run is about. `model` (a model's architecture:
presets and Hugging Face config.json files, with what we refuse to approximate) and `profile`
(the one reader and validator of hardware profiles)."""

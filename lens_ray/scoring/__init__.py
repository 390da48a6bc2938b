"""A trained reward model as others use it: the reward-model API `RewardModel` (reward_model.py: texts ->
rewards, embedded exactly as the run embedded them), the wire protocols a server speaks (protocols.py:
OpenRLHF's /get_reward and lens-ray's /score, checked), the callables trainers take (integrations.py: TRL,
verl, OpenRLHF; openrlhf_reward.py is OpenRLHF's file), and the Hugging Face export (export.py, with
hf_modeling.py as the exported modeling file). A new wire protocol goes in protocols.py.

What it may import: `lens_ray.config`, `lens_ray.core`, `lens_ray.store`, `lens_ray.data` and itself; no Ray
(the server is `distributed/serving.py`).
"""

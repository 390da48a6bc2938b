"""The Ray layer: it adds sharding, scheduling, storage and fault handling to the math, nothing else.

session.py joins a cluster or starts a local Ray on 127.0.0.1; embedding.py and synthesis.py are Ray Data
(actor pools for embedding and for synthesis, pair sets as datasets); training.py is Ray Train (TorchTrainer,
DDP, verified checkpoints, resume); trials.py is Ray Tune (the search's trials, the curve's tasks); serving.py
is Ray Serve (the reward server). A new Ray stage goes here, one file per Ray library it uses.

What it may import: everything below it (`config`, `core`, `store`, `data`, `scoring`) and itself; never
`pipelines` or the CLI.
"""

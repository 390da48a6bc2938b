"""One reward model, every way a consumer reaches it: 16 texts (8 HH pairs' chosen and rejected responses) scored
through RewardModel.score, the TRL callable (plain, messages and hand-templated prompts), OpenRLHF's
reward_func in process (queries as its client builds them: decoded prompt tokens, cut from the left when
asked, plus the response and its end-of-turn token), the export loaded with and without trust_remote_code,
and a last-layer mean_diff head's standard export. Reports each path's largest difference from
RewardModel.score, the standard load's correlation and order agreement, and the reward scale raw and
standardized. No Ray, no server (the server's equality with RewardModel.score is a test).

    .venv/bin/python bench/consumers.py --run runs/hh_harmless_dev-smollm2 [--head NAME]

Prints a markdown table and appends the figures, with the machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _texts(run, n: int) -> tuple[list, list]:
    from lens_ray.core.pairs import Quarantine
    from lens_ray.data.formats import to_pairs
    from lens_ray.data.ingest import read_table
    rows, where = read_table(run.config.data.data, Quarantine())
    pairs = to_pairs(rows, Quarantine(), where)[-n:]               # the file's end: seed pairs come from its start
    return [p.prompt for p in pairs for _ in (0, 1)], [r for p in pairs for r in (p.chosen, p.rejected)]


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    i, j = np.triu_indices(len(a), 1)
    return float(np.mean(np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--head", default=None)
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args()
    from embed_throughput import machine
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.scoring import integrations
    from lens_ray.scoring.export import export, exported_logits
    from lens_ray.scoring.integrations import trl_reward
    from lens_ray.scoring.reward_model import RewardModel

    run = FinishedRun.open(args.run)
    rm = RewardModel.from_run(args.run, args.head)
    prompts, responses = _texts(run, args.pairs)
    want, raw = rm.score(prompts, responses), rm.score(prompts, responses, normalize=False)
    tok = rm.lm.tokenizer
    rendered = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    rows: dict[str, np.ndarray] = {}
    trl = trl_reward(args.run, args.head, model=rm)
    rows["TRL callable, messages"] = np.array(trl(prompts, [[{"role": "assistant", "content": r}]
                                                            for r in responses]))
    rows["TRL callable, templated string"] = np.array(trl(rendered, responses))
    os.environ["LENS_RAY_RUN"] = args.run
    integrations._MODEL = rm
    for cut in (0, 16):                                             # whole prompts; their first 16 tokens cut
        queries = []
        for text, r in zip(rendered, responses):
            ids = tok(text, add_special_tokens=False)["input_ids"][cut:]
            queries.append(tok.decode(ids + tok(r + tok.eos_token, add_special_tokens=False)["input_ids"],
                                      skip_special_tokens=False))
        got = integrations.openrlhf_reward_func(queries, rendered, [None] * len(queries))["rewards"].numpy()
        rows[f"OpenRLHF reward_func{', prompt cut by 16 tokens' if cut else ''}"] = got
    dtype = next(rm.lm.model.parameters()).dtype
    with tempfile.TemporaryDirectory() as tmp:
        folder, form = export(rm, os.path.join(tmp, "pick"))
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, dtype=dtype).eval()
        ex_tok = AutoTokenizer.from_pretrained(folder)
        rows[f"export ({form}), right padding"] = (exported_logits(model, ex_tok, prompts, responses).numpy()
                                                   - model.config.lens_reward["offset"])
        rows[f"export ({form}), left padding"] = (exported_logits(model, ex_tok, prompts, responses, "left").numpy()
                                                  - model.config.lens_reward["offset"])
        # the same head with the LM in float32 (a CPU without native bf16, or a loader asked for fp32)
        import dataclasses

        from lens_ray.data.embed import load_model
        e32 = dataclasses.replace(rm.embed_cfg, dtype="float32")
        rm32 = RewardModel(load_model(e32.model, "float32"), rm.head, e32, rm.head_name, rm.run_uri, rm.reward_norm)
        want32 = rm32.score(prompts, responses)
        folder32, _ = export(rm32, os.path.join(tmp, "pick32"))
        model32 = AutoModelForSequenceClassification.from_pretrained(folder32, trust_remote_code=True,
                                                                     dtype=torch.float32).eval()
        rows[f"export ({form}), float32, against float32 scoring"] = (
            exported_logits(model32, AutoTokenizer.from_pretrained(folder32), prompts, responses).numpy()
            - model32.config.lens_reward["offset"] - want32 + want)          # shown against `want`: its own diff
        del model32, rm32
        try:
            AutoModelForSequenceClassification.from_pretrained(folder)
            plain = "loads"
        except ValueError as exc:
            plain = "refused: " + str(exc).splitlines()[-1][:80]
        # an MLP head of the same run: model type lens_reward, loaded with trust_remote_code as it must be
        mlp_name = next((n[:-len(".json")] for n in sorted(run.store.child("heads").listdir())
                         if n.startswith("original-f1-s0.json")), None)
        if mlp_name:
            mlp = RewardModel.from_run(args.run, mlp_name)
            mlp.lm = rm.lm
            folder_mlp, form_mlp = export(mlp, os.path.join(tmp, "mlp"))
            lens_model = AutoModelForSequenceClassification.from_pretrained(folder_mlp, trust_remote_code=True,
                                                                            dtype=dtype).eval()
            got = exported_logits(lens_model, AutoTokenizer.from_pretrained(folder_mlp), prompts, responses).numpy()
            rows[f"export ({form_mlp}) of the MLP head {mlp_name}, trust_remote_code"] = (
                got - mlp.score(prompts, responses) + want)              # shown against `want`: its own diff
        standard = {}
        md_name = next((n for n in run.store.child("heads").listdir() if n.startswith("mean_diff-f1-s0.json")), None)
        if md_name:
            md = RewardModel.from_run(args.run, md_name[:-len(".json")])
            md.lm = rm.lm                                          # the same LM: load it once
            if md.embed_cfg.layer == (-1,):
                folder, form_md = export(md, os.path.join(tmp, "md"))
                std_model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval()
                got = exported_logits(std_model, AutoTokenizer.from_pretrained(folder), prompts, responses).numpy()
                ref = md.score(prompts, responses) + std_model.config.lens_reward["offset"]
                md_raw = md.score(prompts, responses, normalize=False)
                standard = {"head": md.head_name, "form": form_md, "class": type(std_model).__name__,
                            "corr": float(np.corrcoef(got, ref)[0, 1]), "pair_order_agreement": _kendall(got, ref),
                            "max_abs_diff": float(np.abs(got - ref).max()), "std": float(np.std(ref)),
                            "raw": [float(md_raw.min()), float(md_raw.max())],
                            "standardized": [float(md.normalized(md_raw).min()), float(md.normalized(md_raw).max())]}
    print(f"run {args.run}, head {rm.head_name} ({machine()}), {len(prompts)} texts, compute dtype {dtype}")
    print(f"reward scale of the head: raw mean {raw.mean():.3g}, std {raw.std():.3g}, range "
          f"[{raw.min():.3g}, {raw.max():.3g}]; standardized mean {want.mean():.3f}, std {want.std():.3f}, "
          f"range [{want.min():.2f}, {want.max():.2f}]")
    diffs = {k: float(np.abs(v - want).max()) for k, v in rows.items()}
    order = {k: (float(np.corrcoef(v, want)[0, 1]), _kendall(v, want)) for k, v in rows.items()}
    print("\n| path | largest difference from RewardModel.score (standardized) | correlation | pair order agreement |"
          "\n|---|---|---|---|")
    for k, d in diffs.items():
        print(f"| {k} | {d:.2e} | {order[k][0]:.5f} | {order[k][1]:.3f} |")
    print(f"\nexport without trust_remote_code: {plain}")
    if standard:
        print(f"standard export of {standard['head']}: {standard['class']} with no custom code; correlation "
              f"{standard['corr']:.5f}, pair order agreement {standard['pair_order_agreement']:.3f}, largest "
              f"difference {standard['max_abs_diff']:.2e} (std of its rewards 1 by construction: "
              f"{standard['std']:.3f}); its rewards raw in [{standard['raw'][0]:.3g}, {standard['raw'][1]:.3g}], "
              f"standardized in [{standard['standardized'][0]:.2f}, {standard['standardized'][1]:.2f}]")
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "consumers", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "run": args.run, "head": rm.head_name, "texts": len(prompts), "dtype": str(dtype),
                             "raw": {"mean": float(raw.mean()), "std": float(raw.std()), "min": float(raw.min()),
                                     "max": float(raw.max())},
                             "standardized": {"mean": float(want.mean()), "std": float(want.std())},
                             "max_abs_diff": diffs, "correlation_and_order": order, "plain_load": plain,
                             "standard": standard}) + "\n")


if __name__ == "__main__":
    with torch.no_grad():
        main()

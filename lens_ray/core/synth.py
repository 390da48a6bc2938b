"""Latent-space synthesis of preference pairs (LENS section 4) and the exact-factor pairing that every
augmentation method shares. Pure numpy/torch, no Ray.

Shapes: B = source pairs in a batch, k = synthetic embeddings per side, d = embedding dim,
F = augmentation factor, m = oversampled draws per side.

Determinism: every random draw for source pair i comes from the generator of (seed, stream,
pair_id[i]) (`rng.py`), so results do not depend on how pairs are batched or sharded.

Exact factor: with k synthetic embeddings per side, pairing within a prompt gives (k+1)^2 pairs
(slot 0 is the original). k = ceil(sqrt(F)) - 1 is the fewest that reach F; the original pair is
always kept and F - 1 of the other (k+1)^2 - 1 combinations are drawn without replacement, so each
source pair yields exactly F pairs and the augmented set is exactly F x the original.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lens_ray.config import SynthConfig
from lens_ray.core.rng import NOISE, PAIRING, keyed_rng, pair_normals
from lens_ray.core.vae import PreferenceVAE, log_normal_density


def synth_per_side(factor: int) -> int:
    """Fewest synthetic embeddings per side whose combinatorial pairing reaches `factor` pairs."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return math.ceil(math.sqrt(factor)) - 1


def slot_combos(k: int) -> np.ndarray:
    """(P, 2) slot pairs (a, b) of one source with k synthetic embeddings per side: all but the original
    (0, 0), in a fixed order; P = (k+1)^2 - 1."""
    return np.array([(a, b) for a in range(k + 1) for b in range(k + 1) if (a, b) != (0, 0)],
                    dtype=np.int64).reshape(-1, 2)


def combinatorial_pairs(pair_ids: np.ndarray, k: int, factor: int, seed: int) -> np.ndarray:
    """(B,) source ids -> (B * F, 3) int64 rows (row-in-batch i, chosen slot a, rejected slot b).

    Rows of source i are contiguous and start with the original (i, 0, 0).
    """
    combos = slot_combos(k)
    if factor - 1 > len(combos):
        raise ValueError(f"factor {factor} needs more than {k} synthetic embeddings per side")
    out = np.empty((len(pair_ids), factor, 3), dtype=np.int64)
    for i, pid in enumerate(pair_ids):
        pick = keyed_rng(seed, PAIRING, pid).permutation(len(combos))[: factor - 1]
        out[i, 0] = (i, 0, 0)
        out[i, 1:, 0] = i
        out[i, 1:, 1:] = combos[np.sort(pick)]
    return out.reshape(-1, 3)


def perturb_and_select(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, k: int,
                       synth: SynthConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent draws and top-k: mu, logvar (B, lat); eps (B, m + 1, lat) standard normals
    -> kept latents (B, k, lat) and the z they perturb (B, lat).

    Candidates are z + eta with eta = sqrt(synth.noise_var) * eps[:, :m]; eps[:, m] samples z under
    encode="sample". The k candidates with the highest log-density (prior N(0, I) or posterior) stay.
    """
    m, lat = eps.shape[1] - 1, mu.shape[-1]
    z = mu if synth.encode == "mean" else mu + (0.5 * logvar).exp() * eps[:, m]
    cand = z[:, None, :] + math.sqrt(synth.noise_var) * eps[:, :m]       # (B, m, lat)
    if synth.select == "prior":
        score = log_normal_density(cand)                                  # (B, m)
    else:
        score = log_normal_density(cand, mu[:, None], logvar[:, None])
    top = score.topk(k, dim=1).indices                                     # (B, k)
    return torch.gather(cand, 1, top[..., None].expand(-1, -1, lat)), z


@torch.no_grad()
def lens_synthesize(vae: PreferenceVAE, e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray,
                    k: int, synth: SynthConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, d) x2 -> synthetic chosen, rejected (B, k, d): e_hat = g(z + eta), top-k of
    m = synth.oversample * k draws. Labels are inherited: everything drawn from a chosen embedding is chosen.
    """
    b, d = e_pos.shape
    if k == 0:
        empty = e_pos.new_zeros(b, 0, d)
        return empty, empty.clone()
    vae.eval()
    m = max(k, synth.oversample * k)
    # one generator per pair: (B, 2 sides, m draws + 1 for the posterior sample, latent)
    eps = torch.from_numpy(pair_normals(seed, NOISE, pair_ids, (2, m + 1, vae.latent_dim))).to(e_pos)
    outs = []
    for side, e in enumerate((e_pos, e_neg)):
        mu, logvar = vae.encode(e)                                        # (B, lat)
        kept, z = perturb_and_select(mu, logvar, eps[:, side], k, synth)
        out = vae.decode(kept)                                            # (B, k, d)
        if synth.residual:
            out = e[:, None, :] + out - vae.decode(z)[:, None, :]
        outs.append(out)
    return outs[0], outs[1]


def gather_pairs(e_pos: torch.Tensor, e_neg: torch.Tensor, syn_pos: torch.Tensor, syn_neg: torch.Tensor,
                 pairs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Materialize pair embeddings: originals (B, d), synthetics (B, k, d), pairs (P, 3) rows
    (source row, chosen slot, rejected slot; slot 0 is the original)
    -> chosen (P, d), rejected (P, d), is_original (P,) bool."""
    all_pos = torch.cat([e_pos[:, None], syn_pos], 1)   # (B, k+1, d)
    all_neg = torch.cat([e_neg[:, None], syn_neg], 1)
    p = torch.from_numpy(np.asarray(pairs, dtype=np.int64))
    return all_pos[p[:, 0], p[:, 1]], all_neg[p[:, 0], p[:, 2]], (p[:, 1] == 0) & (p[:, 2] == 0)

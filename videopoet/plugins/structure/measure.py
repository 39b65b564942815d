"""How well :func:`optical_flow` recovers the world's ground-truth flow, per DIS preset.

``python -m videopoet.plugins.structure.measure [COUNT]`` prints, for the world's moving clips
among indices ``0 .. COUNT - 1`` (seed 0, 17x64x64), the mean and worst per-clip end-point
error on the main object's pixels, that of the zero flow, and the error on background more
than 4 px from the object (where the true flow is zero). docs/structure.md quotes it.
"""

from __future__ import annotations

import sys

import numpy as np

from videopoet.plugins.structure.flow import PRESETS, optical_flow, require_cv2


def measure_on_world(
    count: int = 120, frames: int = 17, size: int = 64, presets: tuple[str, ...] = PRESETS
) -> dict[str, dict[str, float]]:
    """Flow error of each preset on the world's moving clips ``0 .. count - 1`` (seed 0).

    Per preset: mean and worst per-clip end-point error (px) on the main object's pixels, the
    same for the zero flow, and the mean error on background pixels more than 4 px from the
    object (where the true flow is zero).
    """
    cv2 = require_cv2()
    from videopoet.core.errors import ConfigError
    from videopoet.data import world

    if frames < 2:
        raise ConfigError("frames", frames, "at least 2 (flow is between frames)")

    kernel = np.ones((9, 9), np.uint8)
    results: dict[str, dict[str, list[float]]] = {p: {} for p in presets}
    for index in range(count):
        item = world.sample(index, frames, size, size)
        if item.motion == "still":
            continue
        truth = item.flow.numpy()
        inside = (item.masks[:-1] > 0.5).numpy()
        moving = (item.masks[:-1] > 0.5) | (item.masks[1:] > 0.5)
        near = np.stack([cv2.dilate(m.numpy().astype(np.uint8), kernel) for m in moving]) > 0
        zero = np.linalg.norm(truth, axis=1)
        for preset in presets:
            estimate = optical_flow(item.video, preset=preset)[:-1].numpy()
            error = np.linalg.norm(estimate - truth, axis=1)
            row = results[preset]
            row.setdefault("object", []).append(float(error[inside].mean()))
            row.setdefault("zero", []).append(float(zero[inside].mean()))
            row.setdefault("far", []).append(float(error[~near].mean()))
    summary = {}
    for preset, row in results.items():
        summary[preset] = {
            "clips": float(len(row.get("object", []))),
            "object_epe": float(np.mean(row["object"])),
            "object_epe_worst": float(np.max(row["object"])),
            "zero_flow_epe": float(np.mean(row["zero"])),
            "far_background_epe": float(np.mean(row["far"])),
        }
    return summary


def main() -> None:
    """Print :func:`measure_on_world` for the world's first ``COUNT`` samples (default 120)."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    for preset, row in measure_on_world(count).items():
        print(
            f"{preset:>9}: {int(row['clips'])} clips, object EPE {row['object_epe']:.3f} px "
            f"(worst clip {row['object_epe_worst']:.3f}), zero flow {row['zero_flow_epe']:.3f} px, "
            f"far background {row['far_background_epe']:.3f} px"
        )


if __name__ == "__main__":
    main()

"""DET plot of a face benchmark: false rejects against false accepts on log axes, the
measured curve from the score files and the normal model of the impostor tail that the
calibration extrapolates with. Usage: det_plot.py OUT_DIR (reads genuine.txt and
impostor.txt there, writes det.png and scores.png)."""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

out = Path(sys.argv[1])
genuine = np.loadtxt(out / "genuine.txt")
impostor = np.loadtxt(out / "impostor.txt")
thresholds = np.linspace(-0.2, 1.0, 1201)
far = np.array([(impostor >= t).mean() for t in thresholds])
frr = np.array([(genuine < t).mean() for t in thresholds])
mean, sd = impostor.mean(), impostor.std(ddof=1)
far_model = np.array([0.5 * math.erfc((t - mean) / (sd * math.sqrt(2))) for t in thresholds])

fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
# Rates of zero cannot be drawn on log axes: they are shown at half the resolution of
# the sample (the separation is complete there).
far_floor, frr_floor = 0.5 / len(impostor), 0.5 / len(genuine)
seen = (far > 0) | (frr > 0)
ax.loglog(
    np.maximum(far[seen], far_floor),
    np.maximum(frr[seen], frr_floor),
    marker=".",
    markersize=2,
    label=f"measured ({len(genuine)} genuine, {len(impostor)} impostor pairs; 0 drawn at half a pair)",
)
ok = (far_model > 1e-12) & (frr > 0)
ax.loglog(far_model[ok], frr[ok], "--", label=f"impostor tail: normal(mean {mean:.3f}, sd {sd:.3f})")
for target, n in [(1e-7, 1), (1e-7 / 50, 50)]:
    ax.axvline(target, color="grey", linewidth=0.6)
    ax.text(target, 0.95, f" N={n}", fontsize=7, ha="left", transform=ax.get_xaxis_transform())
ax.set_xlabel("false-accept rate per comparison")
ax.set_ylabel("false-reject rate")
ax.set_title("Reference face models on real photos (DET)")
ax.grid(True, which="both", linewidth=0.3)
ax.legend(fontsize=7, loc="lower left")
fig.tight_layout()
fig.savefig(out / "det.png")

fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
bins = np.linspace(-0.5, 1.0, 76)
ax.hist(impostor, bins=bins, alpha=0.6, density=True, label="impostor pairs")
ax.hist(genuine, bins=bins, alpha=0.6, density=True, label="genuine pairs")
ax.set_xlabel("cosine similarity")
ax.set_ylabel("density")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "scores.png")
print(f"det.png and scores.png in {out}")

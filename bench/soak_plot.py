"""The soak (bench/soak.py) as one picture: connections per tenant against its limit, transactions per
second, failures, and the server's memory against its limit, over time, with the events marked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.soak import Record
    from sharedpg_tools.spec import Tenant

EVENT_NAMES = {"restart": "restart", "noisy": "noisy neighbour", "rotation": "password rotation", "lock": "long lock"}


def draw(record: Record, tenants: list[Tenant], path: Path, memory_limit: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(12, 12), sharex=True)
    colours = {t.name: plt.get_cmap("tab10")(i) for i, t in enumerate(tenants)}
    times = [s[0] for s in record.samples]
    for t in tenants:
        colour = colours[t.name]
        axes[0].plot(times, [s[2].get(t.role, 0) for s in record.samples], color=colour, label=t.name)
        axes[0].axhline(t.connection_limit, color=colour, linestyle=":", linewidth=1)
    axes[0].set_ylabel("connections\n(dotted: limit)")
    axes[0].legend(loc="upper left", ncol=3, fontsize=8)
    done = Counter((int(x[0]), x[1]) for x in record.transactions if x[2])
    seconds = range(int(max((x[0] for x in record.transactions), default=0)) + 1)
    for t in tenants:
        axes[1].plot(seconds, [done[(s, t.name)] for s in seconds], color=colours[t.name], linewidth=1)
    axes[1].set_ylabel("transactions / s")
    failed = Counter(int(x[0]) for x in record.transactions if not x[2])
    axes[2].bar(list(seconds), [failed[s] for s in seconds], color="crimson", width=1.0)
    axes[2].set_ylabel("failed\ntransactions / s")
    axes[3].plot(times, [s[1] / 2**20 for s in record.samples], color="black")
    if memory_limit:
        axes[3].axhline(memory_limit / 2**20, color="crimson", linestyle="--", label="memory limit")
        axes[3].legend(loc="upper left", fontsize=8)
    axes[3].set_ylabel("server PSS, MiB")
    axes[3].set_xlabel("seconds")
    for name, (began, ended) in record.events.items():
        for ax in axes:
            ax.axvspan(began, max(ended, began + 0.5), color="grey", alpha=0.15)
        axes[0].annotate(EVENT_NAMES.get(name, name), (began, 1.0), xycoords=("data", "axes fraction"),
                         fontsize=8, va="bottom")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

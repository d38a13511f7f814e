"""The figures as text, markdown, JSON and plots."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._time import td64_str
from ..events import Realized
from ..schema import SIDES

from .metrics import TIMING_BASELINES, TIMING_SIDES
from .table import Table, bucket_step
from .windows import Window


# ---------------------------------------------------------------------------------------------
# text, markdown and plots
def _f(v, pct=False, ratio=False) -> str:
    """A figure as the tables print it: a share in %, a ratio (lift) to 2 places, a
    correlation signed to 3."""
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:.2f}" if ratio or abs(v) > 1 else f"{v:+.3f}"


def summary_rows(window: dict) -> list[tuple[str, dict]]:
    """(metric, {predictor: value}) rows of one window, for text and markdown tables."""
    rows = []
    t = window["timing"]
    for side in TIMING_SIDES:
        d = t[side]
        if d["realized_notional"] <= 0:
            continue
        for metric, label in (("spearman", "Spearman"), ("pearson_log1p", "Pearson log1p"),
                              ("top10_share", "top-10% bucket share")):
            vals = {"estimate": d["estimate"][metric]}
            for b in TIMING_BASELINES:
                vals[b] = d[b][metric]
            vals["uniform"] = d["uniform"][metric]
            rows.append((f"timing {side}: {label}", vals))
        dd = d.get("daily") or {}
        if dd.get("estimate") is not None:
            rows.append((f"timing {side}: daily Spearman ({dd['n_days']} complete days)",
                         {p: dd.get(p) for p in ("estimate",) + TIMING_BASELINES}))
    lv = window.get("levels") or {}
    for g in ("long", "short", "all"):
        if g not in lv:
            continue
        d = lv[g]
        rows.append((f"levels {g}: top-decile bin share",
                     {"estimate": d["estimate"]["top10_share"],
                      "uniform": d["uniform"]["top10_share"]}))
        rows.append((f"levels {g}: lift over uniform",
                     {"estimate": d["estimate"]["lift"], "uniform": d["uniform"]["lift"]}))
    return rows


PREDICTORS = ("estimate",) + TIMING_BASELINES + ("uniform",)


def bootstrap_lines(window: dict) -> list[str]:
    """One line per side: "estimate − best baseline" Spearman with its bootstrap interval."""
    out = []
    for side in TIMING_SIDES:
        d = window["timing"].get(side) or {}
        b = d.get("bootstrap")
        if not b or d.get("realized_notional", 0) <= 0 or b.get("lo") is None:
            continue
        out.append(f"{side}: estimate − {b['vs']} Spearman {b['point']:+.3f}, "
                   f"{100 * b['level']:.0f}% CI [{b['lo']:+.3f}, {b['hi']:+.3f}] "
                   f"({b['n_days']} days, partial ones included, {b['valid_draws']} draws, "
                   f"seed {b['seed']}; "
                   f"{100 * b['share_le_0']:.1f}% of draws ≤ 0)")
    return out


def format_text(result: dict) -> str:
    """Plain-text tables of an :func:`evaluate` result."""
    lines = [f"realized: {result['realized']['source']} ({result['realized']['kind']}); "
             f"buckets of {result['eval_step']}"]
    for w in result["windows"]:
        lines.append("")
        lines.append(f"{w['name']}: {w['timing']['n_buckets']} buckets "
                     f"{w['first_bucket']} .. {w['last_bucket']}")
        lines.append(f"  {'metric':<40}" + "".join(f"{p:>11}" for p in PREDICTORS))
        for metric, vals in summary_rows(w):
            pct = "share" in metric
            lines.append(f"  {metric:<40}" + "".join(f"{_f(vals.get(p), pct, 'lift' in metric):>11}"
                                                       for p in PREDICTORS))
        bl = bootstrap_lines(w)
        if bl:
            lines.append("  bootstrap over days:")
            lines += [f"    {x}" for x in bl]
        lv = w.get("levels") or {}
        if "all" in lv:
            a = lv["all"]
            lines.append(f"  levels: {a['n_in_range']} of {a['n_events']} events inside their "
                         f"bucket's [low, high] ({_f(a['in_range_share'], True)} of notional; prices "
                         f"{lv['price_kind']})")
    return "\n".join(lines)


def format_markdown(result: dict, title: str = "Evaluation") -> str:
    """Markdown summary of an :func:`evaluate` result."""
    out = [f"# {title}", "",
           f"Realized: `{result['realized']['source']}` ({result['realized']['kind']}); "
           f"evaluation buckets of {result['eval_step']}; store buckets of {result['every']}.",
           ""]
    if result.get("params"):
        out += [f"Model parameters: `{result['params']}`", ""]
    for w in result["windows"]:
        out += [f"## {w['name']}", "",
                f"{w['timing']['n_buckets']} buckets, {w['first_bucket']} .. {w['last_bucket']}.",
                "", "| metric | " + " | ".join(PREDICTORS) + " |",
                "|---|" + "---:|" * len(PREDICTORS)]
        for metric, vals in summary_rows(w):
            pct = "share" in metric
            out.append(f"| {metric} | " + " | ".join(_f(vals.get(p), pct, "lift" in metric)
                                                      for p in PREDICTORS) + " |")
        out.append("")
        bl = bootstrap_lines(w)
        if bl:
            out += ["Bootstrap over days (resampling UTC days with replacement):", ""]
            out += [f"* {x}" for x in bl]
            out.append("")
    return "\n".join(out)


def _save(fig, path: Path) -> None:
    import os
    import uuid

    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plot_window(ds, realized: Realized, table: Table, window: Window, folder: Path,
                slug: str) -> list[Path]:
    """Estimated vs realized over time per side; event prices over the heatmap (events only)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    written = []
    m = window.contains(table.time)
    tt = table.time[m]
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for j, (ax, side) in enumerate(zip(axes, SIDES)):
        ax.plot(tt, table.realized[m, j] / 1e6, lw=0.8, color="tab:red", label="realized")
        ax.set_ylabel(f"{side} realized, M")
        ax2 = ax.twinx()
        ax2.plot(tt, table.estimate[m, j] / 1e6, lw=0.8, color="tab:blue", alpha=0.7,
                 label="estimated")
        ax2.set_ylabel(f"{side} estimated, M")
        ax.set_title(f"{side}s liquidated per {td64_str(table.step)} bucket", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.suptitle(window.name, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    p = folder / f"{slug}_timing.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)
    if realized.kind == "events":
        f = realized.frame
        rt = f["time"].to_numpy().astype("datetime64[ns]")
        ok = window.contains(rt) & np.isfinite(f["price"].to_numpy())
        t = ds["time"].values.astype("datetime64[ns]")
        every = bucket_step(ds)
        if ok.any():
            t0, t1 = rt[ok].min() - 6 * every, rt[ok].max() + 6 * every
            sel = np.flatnonzero((t >= t0) & (t <= t1))
            if sel.size:
                prices = f["price"].to_numpy()[ok]
                pad = 0.03 * (np.nanmax(prices) - np.nanmin(prices) + np.nanmean(prices) * 0.01)
                edges = ds["price_edges"].values
                pl, ph = np.nanmin(prices) - pad, np.nanmax(prices) + pad
                jsel = np.flatnonzero((edges[1:] >= pl) & (edges[:-1] <= ph))
                # each bucket's cells: the snapshot at the end of the bucket before it, the
                # profile the levels metric scores its events against (not the bucket's own
                # end, whose levels its liquidations have already emptied)
                img = np.asarray(ds["intensity"].isel(time=np.maximum(sel - 1, 0), price=jsel)
                                 .sum(["series", "leverage", "side"]).values, np.float64)
                img[sel == 0] = 0.0
                fig, ax = plt.subplots(figsize=(11, 6))
                te = np.r_[t[sel], t[sel[-1]] + every]
                from matplotlib.colors import PowerNorm

                mesh = ax.pcolormesh(te, edges[jsel[0]:jsel[-1] + 2], img.T, cmap="magma",
                                     shading="flat", norm=PowerNorm(0.5, vmin=0.0))
                quote = str(ds["quote"].values[0]) if "quote" in ds.coords else "quote"
                bar = fig.colorbar(mesh, ax=ax, pad=0.01)
                bar.set_label(f"estimated live notional per bin ({quote}, sqrt scale)",
                              fontsize=8)
                shown = [np.datetime64(e, "ns") for e in (window.start, window.end)
                         if e is not None and te[0] < np.datetime64(e, "ns") < te[-1]]
                for edge in shown:  # the window; around it: context
                    ax.axvline(edge, color="white", lw=0.8, ls="--", alpha=0.7)
                sides = f["side"].to_numpy()[ok]
                w = f["notional"].to_numpy()[ok]
                size = 4 + 60 * np.sqrt(w / max(w.max(), 1e-12))
                for s, c in (("long", "tab:cyan"), ("short", "tab:green"),
                             ("unknown", "white")):
                    ms = sides == s
                    if ms.any():
                        ax.scatter(rt[ok][ms], prices[ms], s=size[ms], c=c, alpha=0.6,
                                   edgecolors="none", label=f"{s} liquidations")
                ax.plot(t[sel] + every, ds["close"].isel(time=sel).values[0], color="white",
                        lw=0.6, label="close (at the bucket's end)")
                ax.set_ylim(pl, ph)
                ax.set_xlabel("time (UTC), the window's events and 6 buckets around them"
                              + ("; dashed: the window's edges" if shown else ""), fontsize=8)
                ax.set_ylabel(f"price ({quote})", fontsize=8)
                ax.legend(fontsize=8, loc="upper left")
                ax.set_title(f"{window.name}: event prices ({realized.price_kind}) over the "
                             "estimated intensity before their bucket (sqrt)", fontsize=9)
                fig.autofmt_xdate()
                fig.tight_layout()
                p = folder / f"{slug}_levels.png"
                _save(fig, p)
                plt.close(fig)
                written.append(p)
    return written


def write_report(folder, ds, realized: Realized, result: dict, windows: list[Window],
                 table: Table, title: str = "Evaluation") -> list[Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and per-window PNGs into ``folder``."""
    import json
    import os

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, w in enumerate(windows):
        slug = f"{i + 1:02d}_{w.role}"
        written += plot_window(ds, realized, table, w, folder, slug)
    md = format_markdown(result, title)
    md += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n"
    for name, text in (("evaluation.json", json.dumps(result, indent=2)),
                       ("evaluation.md", md)):
        p = folder / name
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
        written.append(p)
    return written


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")

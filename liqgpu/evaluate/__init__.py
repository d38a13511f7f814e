"""How good is the estimate? Accuracy figures against realized liquidations, with baselines.

Everything here is a pure function of numpy arrays, pandas frames or an xarray dataset (a store
opened with :func:`liqgpu.open_store`, or the dataset :func:`liqgpu.estimate` returns):

* :func:`load_realized` reads realized liquidations: either **events** (the normalized events
  schema: ``time, side, price, notional``; ``exchange, symbol, price_kind, qty`` optional) or
  **aggregates** (``time`` plus a long and a short notional column per bar).
* :func:`evaluate` lines the estimate up with them on common buckets and computes, per window:

  - *timing*: per bucket and side, estimated liquidated notional against realized notional:
    Spearman and Pearson-of-log1p correlations and the share of realized notional in the buckets
    the estimate ranks in its top 10 %;
  - *levels* (events with prices): where each event's price falls in the estimated intensity
    profile of its side at the end of the previous bucket, over the bins inside the event
    bucket's [low, high]: the share of realized notional in the profile's top-decile bins and
    the lift over a uniform spread across the range;
  - *daily*: the Spearman of per-day sums (complete UTC days) of each predictor, and a
    bootstrap over days (resampled with replacement) of "estimate minus best baseline"
    per-bucket Spearman per side, with a 95 % interval (:func:`bootstrap_days`);
  - the same figures for baselines on the same buckets: ``range_oi`` (log(open/low)·OI for
    longs, log(high/open)·OI for shorts), ``absret_oi`` (|log(close/open)|·OI) and, for levels
    and the top-10 % share, ``uniform``.

Ties are handled exactly: a bucket (or bin) tied with others at the top-decile boundary counts
with the probability that a random tie-break puts it in the top decile, so a constant predictor
scores exactly the uniform share.
"""

from __future__ import annotations

from ..events import Realized, load_realized, parse_columns
from .metrics import (TOP, average_ranks, pearson, pearson_log1p, profile_figures, spearman,
                      timing_figures, top_membership, top_share)
from .report import format_markdown, format_text, plot_window, write_report
from .run import SWEEP_DEFAULTS, evaluate_store, parse_windows, sweep_files, sweep_space
from .scores import (bootstrap_days, bootstrap_vs_best, daily_figures, daily_sums, evaluate,
                     levels, timing)
from .table import Table, baseline_scores, bucket_inputs, build_table, table_from_arrays
from .windows import Window, parse_window

__all__ = ["Realized", "SWEEP_DEFAULTS", "TOP", "Table", "Window", "average_ranks", "baseline_scores",
           "bootstrap_days", "bootstrap_vs_best", "bucket_inputs", "build_table", "daily_figures",
           "daily_sums", "evaluate", "evaluate_store", "format_markdown", "format_text", "levels", "load_realized",
           "parse_columns", "parse_window", "parse_windows", "pearson", "pearson_log1p", "plot_window",
           "profile_figures", "spearman", "sweep_files", "sweep_space", "table_from_arrays", "timing", "timing_figures",
           "top_membership", "top_share", "write_report"]

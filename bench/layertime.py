"""Owns the per-layer time benchmark: where each unit's forward time goes at batch 1 and 128, against its MACs."""
from __future__ import annotations

from bench import harness


def top_gaps(df, b: int, n: int) -> str:
    """The `n` rows whose share of the time at batch `b` most exceeds their share of MACs."""
    gap = (df[f"time_share_b{b}"] - df["mac_share"]).sort_values(ascending=False).head(n)
    return "; ".join(f"{df.at[i, 'layer']} ({df.at[i, 'kind']}) {df.at[i, f'time_share_b{b}']:.1%} of time vs "
                     f"{df.at[i, 'mac_share']:.1%} of MACs" for i in gap.index)


def inside_units(df, b: int) -> str:
    """The kinds of layer inside the units (stem, pooling and FC left out), by their share of the whole forward time
    at batch `b`, each beside its share of MACs."""
    rows = df[df["layer"].str.startswith("units.")]
    g = rows.groupby("kind")[["mac_share", f"time_share_b{b}"]].sum()
    g = g.sort_values(f"time_share_b{b}", ascending=False)
    return "; ".join(f"{k} {r[f'time_share_b{b}']:.1%} of time vs {r['mac_share']:.1%} of MACs" for k, r in g.iterrows())


def main() -> int:
    ap = harness.parser(__doc__, out=str(harness.REPO / "docs" / "bench-layertime.txt"))
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--budget-s", type=float, default=2.0, help="seconds of timing per model and batch (at least "
                    "3 passes with hooks and 3 without)")
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered unit")
    a = ap.parse_args()
    from mscompare import layertime
    from mscompare.config import config_for
    from mscompare.models import list_units

    rep = harness.Report(a)
    rep.say(f"{a.dataset} shape, width {a.width}, the paper's unit counts; 1 thread; eval mode; random inputs; "
            f"about {a.budget_s:g} s of passes per model and batch, hooked and plain passes alternating\n")
    summary = []
    for model in a.models or list_units():
        df = layertime.breakdown(config_for(model, a.dataset, width=a.width), layertime.BATCHES, threads=1,
                                 budget_s=a.budget_s)
        rep.say(f"=== {model} ({df.attrs['forward_ms'][1]:.3f} ms at batch 1, "
                f"{df.attrs['forward_ms'][128]:.1f} ms at batch 128, whole forward without hooks)")
        rep.say(layertime.header(df))
        rep.say(layertime.table_text(df))
        rep.say("")
        summary.append([(f"{model} batch {b}: {top_gaps(df, b, 3)}", f"{model} batch {b}: {inside_units(df, b)}")
                        for b in layertime.BATCHES])
    rep.say("=== per unit and batch, the three rows whose share of the time most exceeds their share of MACs")
    for gaps, _ in (x for model in summary for x in model):
        rep.say(gaps)
    rep.say("\n=== per unit and batch, the kinds of layer inside the units (shares of the whole forward)")
    for _, kinds in (x for model in summary for x in model):
        rep.say(kinds)
    rep.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

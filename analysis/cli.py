"""`lmc` subcommands of the analysis stage (tables and figures from results on disk)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("barriers", help="collect every interpolation's barriers into one table")
    p.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")
    p.add_argument("--out", default=None, help="write CSV/Markdown/LaTeX with this path stem")
    p.set_defaults(func=_barriers)


def _barriers(args) -> int:
    from analysis.tables import collect_barriers, with_paper, write_table

    table = collect_barriers(args.results)
    if table.empty:
        print("no interpolation results yet: run `lmc interpolate RUN_A RUN_B` or `lmc demo`")
        return 1
    table = with_paper(table)
    cols = ["interpolation", "split", "error_barrier_pct", "loss_barrier", "acc_a", "acc_b", "paper_barrier_pct"]
    print(table[cols].to_markdown(index=False, floatfmt=".3f"))
    if args.out:
        for path in write_table(table, args.out).values():
            print(path)
    return 0

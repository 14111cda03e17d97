"""The confirms benchmark's summary and Markdown report (bench/results/confirms-<UTC>.md)."""

from __future__ import annotations

import statistics


def summarize(m) -> dict:
    """Medians of one measurement's runs (run.Measurement): over the clean ones, else over the loaded ones."""
    runs = [r for r in m.runs if "value" in r]
    clean = [r for r in runs if not r["loaded"]]
    use = clean or runs
    out = {"label": m.label, "group": m.group, "runs": len(m.runs), "clean_runs": len(clean),
           "loaded_runs": len(runs) - len(clean), "failed_runs": len(m.runs) - len(runs)}
    if use:
        for k in use[0]["value"]:
            vals = [r["value"][k] for r in use if isinstance(r["value"].get(k), (int, float))]
            if vals:
                out[k] = statistics.median(vals)
        out["background_cores_median"] = statistics.median(r["load"]["background_cores"] for r in use)
        out["median_of"] = "clean runs" if clean else "LOADED runs (no clean run)"
    return out


def markdown(report: dict) -> str:
    lines = [f"# Confirms, queues, prefetch and pools: {report['started']}", "",
             f"- broker: {report['broker']}", f"- machine: {report['machine']}",
             f"- {report['rounds']}/{report['rounds_planned']} round(s) done, N={report['n']}, "
             f"gate: background CPU <= "
             f"{report['max_background_cores']} cores, up to {report['max_attempts']} attempts per run",
             f"- total wall time: {report['seconds']:.0f} s"]
    if report.get("note"):
        lines.append(f"- note: {report['note']}")
    lines += ["", "| measurement | tasks/s | p50 ms | p99 ms | clean/loaded/failed runs | median background cores |",
              "|---|---:|---:|---:|---|---:|"]
    for key, s in report["summary"].items():
        def f(k, fmt="{:.0f}"):
            v = s.get(k)
            return fmt.format(v) if isinstance(v, (int, float)) else ""
        lines.append(f"| {s['label']} | {f('rate')} | {f('p50_ms', '{:.1f}')} | {f('p99_ms', '{:.1f}')} | "
                     f"{s['clean_runs']}/{s['loaded_runs']}/{s['failed_runs']} | "
                     f"{f('background_cores_median', '{:.2f}')} |")
    lines += ["", "## Targets", ""]
    for t in report["targets"]:
        lines.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']}: {t['measured']}")
    lines += ["", "Rows whose runs were all taken under load (clean 0) are medians of loaded runs: "
              "read them as indications only.", ""]
    return "\n".join(lines)

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


def _figure(s: dict | None) -> str:
    """One table cell: tasks/s, p50 / p99 where measured, the pairs' ratio; * when no run was clean."""
    if not s:
        return ""
    rate = s.get("rate")
    if not isinstance(rate, (int, float)):
        return "failed" if s.get("failed_runs") else ""
    text = f"{rate:.0f}"
    if isinstance(s.get("p50_ms"), (int, float)) and isinstance(s.get("p99_ms"), (int, float)):
        text += f" ({s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms)"
    if isinstance(s.get("ratio"), (int, float)):
        text += f" ({s['ratio']:.0%} of the ceiling)"
    return text + ("" if s.get("clean_runs") else " *")


def _ratio(a: dict | None, b: dict | None) -> str:
    ra, rb = (a or {}).get("rate"), (b or {}).get("rate")
    if isinstance(ra, (int, float)) and isinstance(rb, (int, float)) and rb:
        return f"{ra / rb:.2f}"
    return ""


def _rows(entries: list[dict], field: str) -> list[tuple[str, str]]:
    """(key, label) of every measurement or target of any broker, in the order first seen."""
    seen: dict[str, str] = {}
    for e in entries:
        if field == "summary":
            for key, s in e["summary"].items():
                seen.setdefault(key, s["label"])
        else:
            for t in e["targets"]:
                seen.setdefault(t["target"], t["target"])
    return list(seen.items())


def markdown(report: dict) -> str:
    """The report: one column per broker (its version in the header), rows side by side."""
    entries = report["brokers"]
    lines = [f"# Confirms, queues, prefetch and pools: {report['started']}", "",
             "- brokers, one at a time in this order, every group on each:"]
    for e in entries:
        b = e["broker"]
        lines.append(f"  - {b['key']}: {b['described']}: {e['rounds']}/{report['rounds_planned']} round(s) "
                     f"in {e['seconds']:.0f} s" + (f" (note: {b['note']})" if b.get("note") else ""))
    lines += [f"- machine: {report['machine']}",
              f"- groups: {report['groups']}, N={report['n']}, gate: background CPU <= "
              f"{report['max_background_cores']} cores, up to {report['max_attempts']} attempts per run",
              f"- total wall time: {report['seconds']:.0f} s"]
    lines += [f"- note: {n}" for n in report["notes"] if not any(n == e["broker"].get("note") for e in entries)]
    if not entries:
        return "\n".join(lines + ["", "No broker could be measured.", ""])
    first = entries[0]
    others = entries[1:]
    heads = [e["broker"]["header"] for e in entries]
    ratio_heads = [f"{first['broker']['key']} / {e['broker']['key']}" for e in others]
    lines += ["", "## Figures", "",
              "tasks/s, medians over the clean runs (p50 / p99 ms where measured; "
              "* no clean run: medians of loaded runs, read as indications only)"
              + ("; the ratio columns divide the first broker's tasks/s by another's" if others else ""), "",
              "| measurement | " + " | ".join(heads + ratio_heads) + " |",
              "|---|" + "---:|" * (len(heads) + len(ratio_heads))]
    for key, label in _rows(entries, "summary"):
        cells = [_figure(e["summary"].get(key)) for e in entries]
        cells += [_ratio(first["summary"].get(key), e["summary"].get(key)) for e in others]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", "", "| target | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for target, _ in _rows(entries, "targets"):
        cells = []
        for e in entries:
            t = next((t for t in e["targets"] if t["target"] == target), None)
            cells.append(f"{'**MET**' if t['met'] else 'NOT MET'}: {t['measured']}" if t else "")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += ["", "## Load gate", "", "clean/loaded/failed runs, median background cores", "",
              "| measurement | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for key, label in _rows(entries, "summary"):
        cells = []
        for e in entries:
            s = e["summary"].get(key)
            bg = s.get("background_cores_median") if s else None
            cells.append(f"{s['clean_runs']}/{s['loaded_runs']}/{s['failed_runs']}"
                         + (f", {bg:.2f}" if isinstance(bg, (int, float)) else "") if s else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)

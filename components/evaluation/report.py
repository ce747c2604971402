"""The evaluation report: a markdown page with PNG plots, stored as an MLflow artifact.

- `suites.png`: one panel per suite, candidate and champion bars with their 95% CIs and the chance line
  (and the blanked controls: all media, and "no audio" / "no video" for one-modality controls);
- `confusion-<suite>.png`: truth vs pick for classification suites (a fixed list of choices);
- the table: value, CI, chance, the media-blanked control with its CI and the paired CI of the difference,
  item counts (flagged below the suite's min_items), and a per-question-type breakdown where items carry a type;
- for audio-visual suites with `modality_controls`, the same for each one-modality control (audio alone
  blanked, video alone blanked), in the table and per question type.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.evaluation.results import SuiteResult  # noqa: E402


def _suites_plot(results: list[SuiteResult], champion: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(2.6 * len(results), 3.2), squeeze=False)
    for ax, result in zip(axes[0], results):
        bars = [("candidate", result.value, result.ci_low, result.ci_high, "tab:blue")]
        if result.blanked is not None:
            b = result.blanked
            bars.append(("blanked", b.value, b.ci_low, b.ci_high, "tab:orange"))
        for modality, c in result.controls.items():  # one modality blanked, the other kept
            colour = "tab:olive" if modality == "audio" else "tab:cyan"
            bars.append((f"no {modality}", c.value, c.ci_low, c.ci_high, colour))
        if result.suite in champion:
            c = champion[result.suite]
            bars.append(("champion", c["value"], c["ci_low"], c["ci_high"], "tab:gray"))
        for x, (label, value, low, high, colour) in enumerate(bars):
            ax.bar(x, value, color=colour, label=label)
            ax.errorbar(x, value, yerr=[[value - low], [high - value]], color="black", capsize=4)
        ax.axhline(result.chance, color="tab:red", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8, rotation=30 if len(bars) > 3 else 0)
        arrow = "higher" if result.higher_is_better else "lower"
        ax.set_title(f"{result.suite}\n{result.metric} ({arrow} is better)", fontsize=9)
        if result.metric == "perplexity":
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _confusion_plot(result: SuiteResult, classes: list[str], path: Path) -> None:
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for item in result.items:
        matrix[index[item["truth"]], index[item["pick"]]] += 1
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("model's pick")
    ax.set_ylabel("truth")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax.set_title(f"{result.suite}: confusion", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: Path, title: str, results: list[SuiteResult], champion: dict[str, dict],
                 classes: dict[str, list[str]], facts: dict[str, str]) -> Path:  # fmt: skip
    """Write report.md and its PNGs into `folder`; returns the markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    _suites_plot(results, champion, folder / "suites.png")
    lines = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in facts.items()] + ["", "![suites](suites.png)", ""]
    lines += ["| suite | metric | value | 95% CI | chance | above chance | media blanked (95% CI) "
              "| score - blanked (paired 95% CI) | items | champion |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        champ = champion.get(r.suite)
        champ_text = f"{champ['value']:.4g}" if champ else "-"
        blanked = delta = "-"
        if r.blanked is not None:
            b = r.blanked
            blanked = f"{b.value:.4g} [{b.ci_low:.4g}, {b.ci_high:.4g}]"
            delta = f"{b.delta:+.4g} [{b.delta_ci_low:+.4g}, {b.delta_ci_high:+.4g}]"
        items = f"{r.num_items}" if r.enough_items else f"{r.num_items} (< {r.min_items}: too few)"
        above = "yes" if r.above_chance else "no"
        lines.append(f"| {r.suite} | {r.metric} | {r.value:.4g} | [{r.ci_low:.4g}, {r.ci_high:.4g}] | {r.chance:.4g} "
                     f"| {above} | {blanked} | {delta} | {items} | {champ_text} |")  # fmt: skip
    controlled = [r for r in results if r.controls]
    if controlled:
        lines += ["", "One modality blanked, the other kept (does the model use each stream?):", "",
                  "| suite | blanked | value (95% CI) | score - control (paired 95% CI) | uses it |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in controlled:
            for modality, c in r.controls.items():
                uses = "yes" if r.above_controls[modality] else "no"
                delta = f"{c.delta:+.4g} [{c.delta_ci_low:+.4g}, {c.delta_ci_high:+.4g}]"
                lines.append(f"| {r.suite} | {modality} | {c.value:.4g} [{c.ci_low:.4g}, {c.ci_high:.4g}] "
                             f"| {delta} | {uses} |")  # fmt: skip
    typed = [r for r in results if r.breakdown]
    if typed:
        modalities = sorted({m for r in typed for m in r.controls})
        lines += ["", "Per question type:", "",
                  "| suite | type | value | 95% CI | media blanked |" + "".join(f" {m} blanked |" for m in modalities)
                  + " items |", "|---|---|---|---|---|" + "---|" * len(modalities) + "---|"]  # fmt: skip

        def cell(row: dict, key: str) -> str:
            return f"{row[key]:.4g}" if key in row else "-"

        for r in typed:
            for kind, row in r.breakdown.items():
                controls = "".join(f" {cell(row, f'{m}_blanked')} |" for m in modalities)
                lines.append(f"| {r.suite} | {kind} | {row['value']:.4g} | [{row['ci_low']:.4g}, {row['ci_high']:.4g}] "
                             f"| {cell(row, 'blanked')} |{controls} {row['num_items']} |")  # fmt: skip
    for r in results:
        if r.suite in classes:
            _confusion_plot(r, classes[r.suite], folder / f"confusion-{r.suite}.png")
            lines += ["", f"![confusion {r.suite}](confusion-{r.suite}.png)"]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

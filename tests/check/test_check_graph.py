"""`mdsl graph`: the lineage of the seed's migration, as DOT and Mermaid."""

from __future__ import annotations

import re
from pathlib import Path

from mdsl.check.graph import lineage, to_dot, to_mermaid
from mdsl.check.resolve import resolve
from mdsl.cli import main
from mdsl.syntax.parser import parse_file

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "plans" / "examples" / "seed-as-it-went.plan"


def test_the_seed_lineage_shows_the_cache_deleted_and_every_copy():
    nodes, edges = lineage(resolve(parse_file(str(SEED))))
    assert ("old_files/cache", "(deleted)", "3 delete") in edges
    assert ("ubuntu:/root/backup.dump", "beetroot:/root/backup.dump", "5 transfer") in edges
    assert ("beetroot:/root/public-system.tar.gz", "new_files", "8 extract") in edges
    assert nodes["old_files/cache"][1] == "ubuntu"


def test_dot_and_mermaid_name_every_edge_once():
    bound = resolve(parse_file(str(ROOT / "plans" / "gitea-sqlite.plan")))
    _, edges = lineage(bound)
    dot, mermaid = to_dot(bound), to_mermaid(bound)
    assert dot.startswith("digraph mdsl {") and dot.rstrip().endswith("}")
    assert len(re.findall(r"^  \S.* -> .*\[label=", dot, re.M)) == len(edges) == len(re.findall(r" -->\|", mermaid))
    assert '"2.3 archive (without repo-archive)"' in dot


def test_cli_graph_exit_codes(tmp_path, capsys):
    assert main(["graph", str(SEED), "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")
    bad = tmp_path / "bad.plan"
    bad.write_text("steps { stop nothing }\n")
    assert main(["graph", str(bad)]) == 2
    assert "E102" in capsys.readouterr().out

"""The renderer: rustc-style text, JSON, SARIF 2.1.0 and GitHub annotations."""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest

from cli_helpers import ROOT, SCHEMAS
from mdsl import render
from mdsl.findings import Finding, Severity
from mdsl.syntax.ast import Span

H101_SOURCE_LINE = '  delete ubuntu:"/home/mastodon/live/public/system/cache"'

# HAZARDS.md's rendered H101, the layout every text finding follows.
H101_RENDERED = """\
error[H101]: `delete` destroys data that has no other copy
  --> seed_as_it_went.plan:43:3
   |
43 |   delete ubuntu:"/home/mastodon/live/public/system/cache"
   |   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ old_files/cache exists only here
   |
   = note: old_files (ubuntu:/home/mastodon/live/public/system) was never archived, synced or transferred before this step
   = help: archive or move it first (`move` keeps it on the host), or, if it can be rebuilt where the data goes,
           declare `derived "cache" rebuild "CMD"` on old_files and exclude it from the copy"""


def h101():
    return Finding(
        "H101", Severity.ERROR, "`delete` destroys data that has no other copy",
        Span("seed_as_it_went.plan", 43, 3, 43, 3 + len(H101_SOURCE_LINE.strip())),
        label="old_files/cache exists only here",
        notes=("old_files (ubuntu:/home/mastodon/live/public/system) was never archived, synced or transferred "
               "before this step",),
        help="archive or move it first (`move` keeps it on the host), or, if it can be rebuilt where the data "
             "goes,\ndeclare `derived \"cache\" rebuild \"CMD\"` on old_files and exclude it from the copy",
    )


def sources_with(path, lines_by_number):
    n = max(lines_by_number)
    text = "\n".join(lines_by_number.get(i, "") for i in range(1, n + 1)) + "\n"
    s = render.Sources()
    s.add(path, text)
    return s


def f_at(line, col, end_line=None, end_col=None, file="p.plan", sev=Severity.ERROR, code="H201", label="here",
         message="something is wrong", notes=(), help=None):
    return Finding(code, sev, message, Span(file, line, col, end_line or line, end_col or col + 1),
                   label=label, notes=notes, help=help)


# ---------------------------------------------------------------- text


def test_h101_matches_the_catalogue_example():
    text = render.render_finding(h101(), sources_with("seed_as_it_went.plan", {43: H101_SOURCE_LINE}))
    assert text == H101_RENDERED


def test_h101_example_is_the_one_in_hazards_md():
    hazards = ROOT.parent / "shared" / "HAZARDS.md"
    assert hazards.exists(), "CI and developers have ../shared beside the repository"
    block = re.search(r"```\n(error\[H101\].*?)\n```", hazards.read_text(encoding="utf-8"), re.S).group(1)
    assert block == H101_RENDERED


def test_one_digit_line_numbers_and_no_notes():
    s = sources_with("p.plan", {2: "  stop old_db"})
    f = f_at(2, 8, end_col=14, code="E103", label="a postgres", message="`old_db` is a postgres")
    assert render.render_finding(f, s) == (
        "error[E103]: `old_db` is a postgres\n"
        " --> p.plan:2:8\n"
        "  |\n"
        "2 |   stop old_db\n"
        "  |        ^^^^^^ a postgres"
    )


def test_warning_and_info_headers():
    s = sources_with("p.plan", {1: "x"})
    assert render.render_finding(f_at(1, 1, sev=Severity.WARNING), s).startswith("warning[H201]: ")
    assert render.render_finding(f_at(1, 1, sev=Severity.INFO), s).startswith("info[H201]: ")


def test_zero_width_span_at_end_of_file_gets_one_caret():
    s = render.Sources()
    s.add("p.plan", 'host a { ssh = "x" ')
    out = render.render_finding(f_at(1, 20, end_col=20, code="E101", label="file ends here"), s)
    assert out.splitlines()[-1] == "  |" + " " * 20 + "^ file ends here"


def test_span_on_the_empty_line_after_the_last_newline():
    s = render.Sources()
    s.add("p.plan", "steps {\n")
    out = render.render_finding(f_at(2, 1, end_col=1, code="E101", label="file ends here"), s)
    assert out.splitlines()[-2:] == ["2 |", "  | ^ file ends here"]


def test_multi_line_span_underlines_the_first_line_to_its_end():
    s = sources_with("p.plan", {3: "  parallel {  ", 4: "    stop a", 5: "  }"})
    out = render.render_finding(f_at(3, 3, end_line=5, end_col=4, code="H204", label="these conflict"), s)
    assert out.splitlines()[3:5] == ["3 |   parallel {", "  |   ^^^^^^^^^^ these conflict"]


def test_span_past_the_end_of_its_line_is_clamped():
    s = sources_with("p.plan", {1: "abc"})
    out = render.render_finding(f_at(1, 2, end_col=50), s)
    assert out.splitlines()[-1] == "  |  ^^ here"


def test_tabs_wide_characters_and_combining_marks_keep_carets_aligned():
    s = sources_with("p.plan", {1: '\tx = "日本" + "e\u0301" bad'})
    col = len('\tx = "日本" + "e\u0301" ') + 1
    out = render.render_finding(f_at(1, col, end_col=col + 3), s).splitlines()
    assert out[3] == '1 |     x = "日本" + "e\u0301" bad'
    # tab -> 4 columns, each CJK character 2, the combining accent 0
    assert out[4] == "  | " + " " * (4 + len('x = "') + 4 + len('" + "e" ')) + "^^^ here"


def test_control_characters_and_bidi_overrides_are_made_visible():
    s = sources_with("evil\x1b[2J.plan", {1: 'a "\x1b[31mred\u202e" b'})
    f = f_at(1, 1, end_col=2, file="evil\x1b[2J.plan", message="bad \x1b[0m message\x07", label="lab\x1bel")
    out = render.render_finding(f, s)
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "\u241b[31mred\ufffd" in out  # ␛ stands for ESC


def test_long_lines_are_shown_as_a_window_around_the_span():
    line = "x" * 500 + " target " + "y" * 500
    s = sources_with("p.plan", {1: line})
    out = render.render_finding(f_at(1, 502, end_col=508), s).splitlines()
    code, carets = out[3], out[4]
    assert code.startswith("1 | ...") and code.endswith("...")
    assert len(code) < 200
    assert code[carets.index("^"):carets.index("^") + 6] == "target"


def test_missing_or_unreadable_source_still_renders(tmp_path):
    f = f_at(3, 1, file=str(tmp_path / "gone.plan"), help="fix it")
    out = render.render_finding(f, render.Sources())
    assert out.splitlines() == [
        "error[H201]: something is wrong",
        f" --> {tmp_path / 'gone.plan'}:3:1",
        "  |",
        "  | here",
        "  = help: fix it",
    ]


def test_crlf_source_lines():
    s = render.Sources()
    s.add("p.plan", b"host a {\r\n  bad = 1\r\n}\r\n")
    out = render.render_finding(f_at(2, 3, end_col=6), s).splitlines()
    assert out[3] == "2 |   bad = 1"


def test_line_numbers_follow_the_parser_not_splitlines():
    # \f and U+2028 are not line breaks for the parser
    s = render.Sources()
    s.add("p.plan", "a\fb\u2028c\nsecond")
    assert s.line("p.plan", 2) == "second"


def test_sources_reads_each_file_once(tmp_path, monkeypatch):
    p = tmp_path / "p.plan"
    p.write_text("one\ntwo\n")
    opened = []
    real_open = open

    def counting_open(path, *a, **k):
        opened.append(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", counting_open)
    s = render.Sources()
    fs = [f_at(1 + i % 2, 1, file=str(p)) for i in range(100)]
    render.render_text(fs, s)
    assert opened == [str(p)]


def test_summary_line():
    e, w, i = Severity.ERROR, Severity.WARNING, Severity.INFO
    assert render.summary([]) == "no findings"
    assert render.summary([f_at(1, 1, sev=e)] * 2 + [f_at(1, 1, sev=w)]) == "2 errors, 1 warning"
    assert render.summary([f_at(1, 1, sev=w)] * 3 + [f_at(1, 1, sev=i)] * 2) == "3 warnings, 2 info"
    assert render.render_text([], render.Sources()) == "no findings\n"


def test_text_blocks_are_separated_by_blank_lines_and_end_with_the_summary():
    s = sources_with("p.plan", {1: "a", 2: "b"})
    out = render.render_text([f_at(1, 1), f_at(2, 1, sev=Severity.WARNING)], s)
    blocks = out.rstrip("\n").split("\n\n")
    assert len(blocks) == 3 and blocks[-1] == "1 error, 1 warning"


def test_colors_only_when_asked():
    s = sources_with("p.plan", {1: "abc"})
    f = f_at(1, 1, help="do this")
    plain = render.render_finding(f, s, color=False)
    colored = render.render_finding(f, s, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[1;31merror[H201]\x1b[0m" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


class _Tty:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_use_color_rules():
    assert render.use_color(_Tty(True), env={}) is True
    assert render.use_color(_Tty(False), env={}) is False
    assert render.use_color(_Tty(True), env={"NO_COLOR": "1"}) is False
    assert render.use_color(_Tty(True), env={"NO_COLOR": ""}) is True  # no-color.org: empty means unset
    assert render.use_color(_Tty(True), env={"TERM": "dumb"}) is False
    assert render.use_color(_Tty(False), env={"FORCE_COLOR": "1"}) is True
    assert render.use_color(object(), env={}) is False


def test_rendering_thousands_of_findings_is_fast():
    lines = {i: f"  dump db{i} to host:\"/backup/{i}.dump\" format = custom" for i in range(1, 5001)}
    s = sources_with("big.plan", lines)
    fs = [f_at(i, 3, end_col=40, file="big.plan", notes=("a note",), help="a help") for i in range(1, 5001)] * 2
    t = time.perf_counter()
    for fmt in render.FORMATS:
        render.render(fs, fmt, s)
    assert time.perf_counter() - t < 3.0


# ---------------------------------------------------------------- JSON


def test_json_matches_its_documented_schema():
    fs = [h101(), f_at(1, 1, sev=Severity.INFO, label="", code="E101")]
    data = json.loads(render.render_json(fs))
    schema = json.loads((SCHEMAS / "mdsl-findings.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data[0] == {
        "code": "H101", "severity": "error", "message": "`delete` destroys data that has no other copy",
        "file": "seed_as_it_went.plan", "line": 43, "column": 3, "end_line": 43, "end_column": 58,
        "label": "old_files/cache exists only here", "notes": list(h101().notes), "help": h101().help,
    }
    assert data[1]["label"] is None and data[1]["help"] is None and data[1]["notes"] == []


def test_json_of_no_findings_is_an_empty_list():
    assert json.loads(render.render_json([])) == []


# ---------------------------------------------------------------- SARIF


def sarif_schema():
    return json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def validate_sarif(doc):
    jsonschema.Draft4Validator(sarif_schema(), format_checker=jsonschema.FormatChecker()).validate(doc)


def test_shipped_sarif_schema_is_the_official_one():
    schema = sarif_schema()
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert schema["id"] == ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                            "sarif-schema-2.1.0.json")
    jsonschema.Draft4Validator.check_schema(schema)
    for name in ("result", "region", "reportingDescriptor", "artifactLocation", "run", "toolComponent"):
        assert name in schema["definitions"]


def test_sarif_validates_and_maps_every_field(tmp_path):
    abs_path = str(tmp_path / "dir with space" / "p.plan")
    fs = [h101(), f_at(2, 5, end_col=9, file=abs_path, sev=Severity.WARNING, code="H302"),
          f_at(1, 1, end_col=1, sev=Severity.INFO, code="Z999", label="")]
    doc = json.loads(render.render_sarif(fs, version="1.2.3"))
    validate_sarif(doc)
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    assert run["tool"]["driver"]["name"] == "mdsl" and run["tool"]["driver"]["version"] == "1.2.3"
    assert run["columnKind"] == "unicodeCodePoints"
    rules = run["tool"]["driver"]["rules"]
    first, second, third = run["results"]
    assert first["ruleId"] == "H101" and first["level"] == "error"
    assert rules[first["ruleIndex"]]["id"] == "H101"
    assert first["message"]["text"].startswith("`delete` destroys data that has no other copy\nnote: ")
    assert "\nhelp: archive or move it first" in first["message"]["text"]
    loc = first["locations"][0]["physicalLocation"]
    assert loc == {"artifactLocation": {"uri": "seed_as_it_went.plan"},
                   "region": {"startLine": 43, "startColumn": 3, "endLine": 43, "endColumn": 58}}
    assert first["locations"][0]["message"] == {"text": "old_files/cache exists only here"}
    assert second["level"] == "warning"
    uri = second["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("file:///") and "dir%20with%20space/p.plan" in uri
    assert third["level"] == "note" and rules[third["ruleIndex"]]["id"] == "Z999"


def test_sarif_of_no_findings_validates():
    doc = json.loads(render.render_sarif([]))
    validate_sarif(doc)
    assert doc["runs"][0]["results"] == []


def test_sarif_rules_come_from_the_catalogue():
    from mdsl.check import catalog

    doc = json.loads(render.render_sarif([h101()]))
    validate_sarif(doc)
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    codes = [r.code for r in catalog.RULES]
    assert [r["id"] for r in rules][: len(codes)] == codes
    by_id = {r["id"]: r for r in rules}
    for r in catalog.RULES:
        sr = by_id[r.code]
        assert sr["shortDescription"]["text"] == r.title
        assert sr["defaultConfiguration"]["level"] == {"error": "error", "warning": "warning",
                                                       "info": "note"}[r.severity.label]
        assert sr.get("fullDescription", {}).get("text") or sr.get("help", {}).get("text")


def test_sarif_rules_with_a_stand_in_catalogue(monkeypatch):
    import types

    cat = types.ModuleType("mdsl.check.catalog")

    class Rule:
        def __init__(self, code, title, severity):
            self.code, self.title, self.severity = code, title, severity

    cat.RULES = (Rule("E101", "syntax error", Severity.ERROR), Rule("H101", "data destroyed", Severity.ERROR),
                 Rule("H302", "no owner", Severity.WARNING))
    cat.page = lambda code: f"# {code}\n\nWhat goes wrong with {code}.\n\n```\nbad\n```\n"
    cat.get = lambda code: {r.code: r for r in cat.RULES}[code]
    monkeypatch.setitem(__import__("sys").modules, "mdsl.check.catalog", cat)
    import mdsl.check

    monkeypatch.setattr(mdsl.check, "catalog", cat, raising=False)
    doc = json.loads(render.render_sarif([h101()]))
    validate_sarif(doc)
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["E101", "H101", "H302"]
    assert rules[1]["shortDescription"] == {"text": "data destroyed"}
    assert rules[1]["fullDescription"] == {"text": "What goes wrong with H101."}
    assert rules[1]["help"]["markdown"].startswith("# H101")
    assert rules[2]["defaultConfiguration"] == {"level": "warning"}
    assert doc["runs"][0]["results"][0]["ruleIndex"] == 1


# ---------------------------------------------------------------- GitHub


def test_github_annotation_format():
    out = render.render_github([h101()])
    assert out.endswith("\n") and out.count("\n") == 1
    head, _, message = out.rstrip("\n").partition("::")[2].partition("::")
    assert head == "error file=seed_as_it_went.plan,line=43,col=3,endLine=43,endColumn=57,title=H101"
    assert message.startswith("`delete` destroys data that has no other copy%0Aold_files/cache exists only here%0A")
    assert "\n" not in message


def test_github_escaping():
    f = f_at(1, 2, end_col=3, file="a,b:c%d.plan", sev=Severity.WARNING, message="100% sure\r\nreally",
             label="")
    line = render.render_github([f]).rstrip("\n")
    assert line == "::warning file=a%2Cb%3Ac%25d.plan,line=1,col=2,endLine=1,endColumn=2,title=H201::100%25 sure%0D%0Areally"


def test_github_levels():
    s = [f_at(1, 1, sev=sev) for sev in (Severity.ERROR, Severity.WARNING, Severity.INFO)]
    assert [ln.split(" ")[0] for ln in render.render_github(s).splitlines()] == ["::error", "::warning", "::notice"]


def test_unknown_format():
    with pytest.raises(ValueError):
        render.render([], "xml")


def test_long_notes_and_help_wrap_with_aligned_continuation_lines():
    s = sources_with("p.plan", {1: "x"})
    words = " ".join(f"word{i}" for i in range(60))
    out = render.render_finding(f_at(1, 1, help=words), s).splitlines()
    help_lines = out[out.index(next(line for line in out if line.startswith("  = help: "))):]
    assert len(help_lines) > 1
    assert all(len(line) <= 128 for line in help_lines)
    assert all(line.startswith(" " * len("  = help: ")) for line in help_lines[1:])
    assert " ".join(line.strip() for line in help_lines).replace("= help: ", "") == words


def test_long_line_of_tabs_keeps_the_caret_under_the_span():
    line = "\t" * 100 + "target"
    s = sources_with("p.plan", {1: line})
    out = render.render_finding(f_at(1, 101, end_col=107), s).splitlines()
    code, carets = out[3], out[4]
    assert code[carets.index("^"):carets.index("^") + 6] == "target"
    assert len(code) <= 4 + 3 + 160 + 3

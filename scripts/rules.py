#!/usr/bin/env python3
"""docs/rules.md: every rule of the contract in one line, with the tests that cite it.

The one-line statements are kept in docs/rules.txt (`<id><TAB><statement>`, `## ` lines start a
section); this script adds, rule by rule, the tests that cite it:

- a Rust test (`#[test]`, `#[tokio::test]`, `proptest!`) in src/, host-harness/src/ or tests/
  cites a rule when the rule's id appears in its name as a word (`c42_...`, `c96a_...`,
  `c127_d4_...`), or upper case (`C42`, `C42–C45` ranges, `C96a`, `D4`, `E1`) in its body or in
  the comments and attributes just above it;
- a JavaScript test (`test('...')` in js/test/) cites the ids in its title and body;
- a shared test vector (tests/vectors/, run by the Rust and the JavaScript host) cites the ids
  in its `rules` field.

    python3 scripts/rules.py            # writes docs/rules.md
    python3 scripts/rules.py --check    # fails when docs/rules.md is stale, or when a citation
                                        # anywhere in the tree names an id docs/rules.txt lacks
    python3 scripts/rules.py --check --contract ../shared/spec/contract.md
                                        # also: docs/rules.txt states every rule of the contract
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
STATEMENTS = ROOT / "docs" / "rules.txt"
OUTPUT = ROOT / "docs" / "rules.md"
SHOWN_TESTS = 6

TEST_ATTR = re.compile(r"#\[(?:tokio::)?test(?:\(.*\))?\]|proptest!")
FN = re.compile(r"\s*(?:pub\s+)?(?:async\s+)?fn\s+([a-z0-9_]+)")
JS_TEST = re.compile(r"""^\s*(?:test|it)\(\s*(['"`])(.*?)\1\s*,""")
# Upper case only (`C42`, `C42–C45`, `C96a`, `D4`, `E1`), so that strings such as `"c1"` in a
# test's data do not count, and not inside a longer word or number (base64, hex).
CITATION = re.compile(
    r"(?<![A-Za-z0-9_])([CDE])(\d{1,3})([a-z]?)(?:\s*[–-]\s*\1?(\d{1,3}))?(?![A-Za-z0-9])"
)
# A test name's words: `c42`, `c96a`, `d4`, `e1`.
NAME_WORD = re.compile(r"^([cde])(\d{1,3})([a-z]?)$")


def cited_in(text):
    """The rule ids a text cites, ranges expanded (`C62–C64` is C62, C63, C64)."""
    found = set()
    for m in CITATION.finditer(text):
        letter, lo, suffix, hi = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if hi is None or suffix:
            found.add(f"{letter}{lo}{suffix}")
        elif lo <= int(hi) <= lo + 200:
            found.update(f"{letter}{n}" for n in range(lo, int(hi) + 1))
    return found


def cited_in_name(name):
    found = set()
    for word in name.split("_"):
        m = NAME_WORD.match(word)
        if m:
            found.add(f"{m.group(1).upper()}{int(m.group(2))}{m.group(3)}")
    return found


def rust_tests(path):
    """(name, cited ids) for each test in a Rust file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if not TEST_ATTR.search(lines[i]):
            i += 1
            continue
        # Doc comments and attributes just above the test count as part of it.
        start = i
        while start > 0 and lines[start - 1].strip().startswith(("//", "#[")):
            start -= 1
        j = i + 1
        while j < len(lines) and not FN.match(lines[j]):
            j += 1
        if j == len(lines):
            break
        name = FN.match(lines[j]).group(1)
        # The body ends at the first `}` at the indentation of its `fn` (rustfmt's layout);
        # counting braces would be misled by the JSON in string literals.
        indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
        k = j
        if not lines[j].rstrip().endswith("}"):
            k = j + 1
            while k < len(lines) and lines[k].rstrip() not in (indent + "}", indent + "});"):
                k += 1
        yield name, cited_in("\n".join(lines[start : k + 1])) | cited_in_name(name)
        i = k + 1


def js_tests(path):
    """(title, cited ids) for each `test('title', ...)` in a JavaScript test file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [(n, JS_TEST.match(line).group(2)) for n, line in enumerate(lines) if JS_TEST.match(line)]
    for index, (n, title) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(lines)
        yield title, cited_in("\n".join(lines[n:end]))


def vector_cases(path):
    """(case index, cited ids) for each case of a shared vector file."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    cases = doc.get("cases") if isinstance(doc, dict) else None
    # SSE and chat vectors are one file each; the others hold a list of cases.
    for i, case in enumerate(cases if isinstance(cases, list) else [doc]):
        if isinstance(case, dict):
            yield i, cited_in(" ".join(case.get("rules", [])))


def read_statements():
    """[(section, [(id, statement)])] from docs/rules.txt, and the problems found in it."""
    sections, problems, seen = [], [], set()
    for n, line in enumerate(STATEMENTS.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif not line.strip() or line.startswith("#"):
            continue
        else:
            rule, _, statement = line.partition("\t")
            where = f"docs/rules.txt:{n}"
            if not re.fullmatch(r"[CDE]\d{1,3}[a-z]?", rule) or not statement.strip():
                problems.append(f"{where}: not `<id><TAB><statement>`: {line[:60]}")
            elif "\t" in statement:
                problems.append(f"{where}: {rule}: a tab inside the statement")
            elif rule in seen:
                problems.append(f"{where}: {rule} is stated twice")
            elif not sections:
                problems.append(f"{where}: {rule} comes before the first `## ` section")
            else:
                seen.add(rule)
                sections[-1][1].append((rule, statement.strip()))
    return sections, problems


def scan_tests():
    """{id: [test]} over every test, and the counts of tests and vectors scanned."""
    by_rule, counts = {}, {"rust": 0, "js": 0, "vectors": 0}

    def cite(rules, test):
        for rule in rules:
            by_rule.setdefault(rule, set()).add(test)

    rust = sorted(ROOT.glob("src/**/*.rs")) + sorted(ROOT.glob("tests/**/*.rs"))
    rust += sorted(ROOT.glob("host-harness/src/**/*.rs"))
    for path in rust:
        rel = path.relative_to(ROOT).as_posix()
        for name, rules in rust_tests(path):
            counts["rust"] += 1
            cite(rules, f"{rel}::{name}")
    for path in sorted(ROOT.glob("js/test/*.mjs")):
        rel = path.relative_to(ROOT).as_posix()
        for title, rules in js_tests(path):
            counts["js"] += 1
            cite(rules, f"{rel}: {title}")
    for path in sorted(ROOT.glob("tests/vectors/**/*.json")):
        rel = path.relative_to(ROOT).as_posix()
        for i, rules in vector_cases(path):
            if rules:
                counts["vectors"] += 1
                cite(rules, f"{rel}#{i}")
    return by_rule, counts


def render(sections, by_rule, counts):
    rules = [rule for _, stated in sections for rule, _ in stated]
    cited = [rule for rule in rules if by_rule.get(rule)]
    out = [
        "# The contract's rules and the tests that cite them",
        "",
        "<!-- Generated by `python3 scripts/rules.py` from docs/rules.txt and the tests; do not "
        "edit by hand. -->",
        "",
        "Each rule of the behavioural contract (`shared/spec/contract.md`, kept outside this "
        "repository) in one line, in this project's words, followed by the tests that cite it "
        "(the first six, by path). C-numbers are the contract's rules (amendments included), "
        "E1–E8 its request-body examples, D1–D13 its deliberate differences from Kibana. "
        "Where a line here and the contract differ, the contract wins.",
        "",
        "To change a statement, edit docs/rules.txt and run `python3 scripts/rules.py`; "
        "`python3 scripts/rules.py --check` (run by `.ci/run`) fails when this file is stale or "
        "when a test, comment or document in the tree cites an id that is not stated here.",
        "",
        f"{counts['rust']} Rust tests, {counts['js']} JavaScript tests and {counts['vectors']} "
        f"shared vectors scanned; {len(cited)} of {len(rules)} ids cited by at least one of them.",
    ]
    for title, stated in sections:
        out += ["", f"## {title}", ""]
        for rule, statement in stated:
            out.append(f"- **{rule}** {statement}")
            tests = sorted(by_rule.get(rule, ()))
            if tests:
                shown = ", ".join(f"`{t}`" for t in tests[:SHOWN_TESTS])
                more = len(tests) - SHOWN_TESTS
                out.append(f"  - {shown}{f' (+{more} more)' if more > 0 else ''}")
            else:
                out.append("  - no test cites it")
    uncited = [rule for rule in rules if not by_rule.get(rule)]
    out += ["", f"Ids no test cites: {', '.join(uncited) if uncited else 'none'}.", ""]
    return "\n".join(out)


# Where the tree's citations are looked for: text files, less what holds encoded data.
SKIPPED = re.compile(
    r"(^|/)(testdata|node_modules|target|deps)/|\.(pem|der|lock|png|wasm|json)$|(^|/)\.gitignore$"
)


def tree_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode().split("\0")
        paths = [ROOT / p for p in listed if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    for path in sorted(paths):
        rel = path.relative_to(ROOT).as_posix()
        if SKIPPED.search(rel) or not path.is_file():
            continue
        try:
            yield rel, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def unresolved(stated):
    """Citations in the tree (tests, comments, docs, vectors) of ids that are not stated."""
    problems = []
    for rel, text in tree_files():
        for n, line in enumerate(text.splitlines(), 1):
            for rule in sorted(cited_in(line) - stated):
                problems.append(f"{rel}:{n}: cites {rule}, which docs/rules.txt does not state")
        if rel.endswith(".rs"):
            for m in FN.finditer(text):
                for rule in sorted(cited_in_name(m.group(1)) - stated):
                    problems.append(f"{rel}: `{m.group(1)}` cites {rule}, which is not stated")
    for path in sorted(ROOT.glob("tests/vectors/**/*.json")):
        rel = path.relative_to(ROOT).as_posix()
        for i, rules in vector_cases(path):
            for rule in sorted(rules - stated):
                problems.append(f"{rel}#{i}: cites {rule}, which docs/rules.txt does not state")
    return problems


def contract_ids(path):
    """The ids a contract text defines: `**C12.**`, `**C67 (amended).**`, `**D3**`, `E1  ...`."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    ids = set(re.findall(r"\*\*([CD]\d{1,3}[a-z]?)(?:\.| \(amended\)\.)?\*\*", text))
    ids |= set(re.findall(r"^(E\d)\s", text, re.M))
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check instead of writing")
    parser.add_argument("--contract", help="also check that every rule of this contract is stated")
    args = parser.parse_args()

    sections, problems = read_statements()
    stated = {rule for _, rules in sections for rule, _ in rules}
    by_rule, counts = scan_tests()
    text = render(sections, by_rule, counts)
    if args.contract:
        defined = contract_ids(args.contract)
        problems += [f"{r}: in the contract, not stated in docs/rules.txt" for r in sorted(defined - stated)]
        problems += [f"{r}: stated in docs/rules.txt, not in the contract" for r in sorted(stated - defined)]
    if args.check:
        problems += unresolved(stated)
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            problems.append("docs/rules.md is stale: run `python3 scripts/rules.py`")
    elif not problems:
        OUTPUT.write_text(text, encoding="utf-8")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(
        f"docs/rules.md {'is up to date' if args.check else 'written'}: {len(stated)} ids stated",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

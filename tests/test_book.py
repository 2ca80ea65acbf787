"""The book's cross-references: every notebook that a notebook names exists in nbs/.

Reads the markdown and code cells of every nbs/*.ipynb (as JSON, no notebook tooling, no torch) and
finds two kinds of reference: "notebook 09" / "notebooks 06 and 08" / "notebooks 08-09", and a
notebook's name such as `09_sampling` or 09_sampling.ipynb.
"""
import json, re
from pathlib import Path

NBS = Path(__file__).resolve().parents[1] / 'nbs'

# "notebook 09", "Notebook 05's", "notebooks 02 and 04", "notebooks 08-09"
NUMBERED = re.compile(r'\bnotebooks?\s+(\d{2}[a-z]?\b(?:\s*(?:,|and|or|to|-|–|—)\s*\d{2}[a-z]?\b)*)', re.I)
NUMBER = re.compile(r'\d{2}[a-z]?')
# `09_sampling`, 09_sampling.ipynb, ../nbs/09_sampling.ipynb; not part of a longer word, not another file type
NAMED = re.compile(r'(?<![\w.-])(\d{2}[a-z]?_[A-Za-z][A-Za-z0-9_]*)(\.[A-Za-z]\w*)?')

# Notebook names allowed before their file lands (names only: a bare "notebook 12" still needs a file).
# 12_scaling (the paper's scaling findings, Part I) is named by 28_sweep; drop an entry once its file exists.
FORWARD = {'12_scaling'}


def notebooks():
    return sorted(NBS.glob('*.ipynb'))


def cells(path):
    """(index, source) of every markdown and code cell of a notebook."""
    nb = json.loads(path.read_text(encoding='utf-8'))
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] in ('markdown', 'code'): yield i, ''.join(c['source'])


def references(text):
    """(kind, target, matched text) for each notebook reference in `text`; kind is 'number' or 'name'."""
    for m in NUMBERED.finditer(text):
        for n in NUMBER.findall(m.group(1)): yield 'number', n, m.group(0)
    for m in NAMED.finditer(text):
        if m.group(2) in (None, '.ipynb'): yield 'name', m.group(1), m.group(0)


def exists(kind, target, stems):
    """A number names a notebook if some nbs/NN*.ipynb exists; a name needs its own file."""
    if kind == 'name': return target in stems or target in FORWARD
    return any(s.startswith(target) for s in stems)


def all_references():
    return [(p.name, i, kind, target, text) for p in notebooks() for i, src in cells(p)
            for kind, target, text in references(src)]


def test_patterns():
    "The detector finds the forms the book uses and skips what is not a notebook."
    found = lambda s: [(k, t) for k, t, _ in references(s)]
    assert found("notebook 13's `load_model`") == [('number', '13')]
    assert found("notebooks 02 and 04; notebooks 08-09") == [('number', '02'), ('number', '04'),
                                                             ('number', '08'), ('number', '09')]
    assert found("see `22a_fast` and ../nbs/05_model.ipynb") == [('name', '22a_fast'), ('name', '05_model')]
    assert found("images/05_patch.png, fmnist_10_x, notebook 2026, 1_000_000, x_05_model") == []
    stems = {'05_model', '22_train', '22a_fast'}
    assert exists('number', '22', stems) and exists('number', '22a', stems) and exists('name', '22a_fast', stems)
    assert not exists('number', '13', stems) and not exists('number', '22b', stems)
    assert not exists('name', '05_models', stems)


def test_references_name_existing_notebooks():
    "Every 'notebook NN' and `NN_name` in the book names a notebook in nbs/."
    stems = {p.stem for p in notebooks()}
    refs = all_references()
    by_kind = {k: sum(r[2] == k for r in refs) for k in ('number', 'name')}
    # not vacuous: the book has dozens of cross-references of both kinds
    assert len(stems) >= 20 and by_kind['number'] >= 10 and by_kind['name'] >= 50, (len(stems), by_kind)
    bad = [f"{nb} cell {i}: {text!r} ({kind} {target}: no such notebook in nbs/)"
           for nb, i, kind, target, text in refs if not exists(kind, target, stems)]
    assert not bad, "stale notebook references:\n" + "\n".join(bad)

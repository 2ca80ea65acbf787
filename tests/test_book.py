"""The book as a reader meets it: every notebook that a notebook names exists in nbs/; every notebook opens with its
outputs; a sentence that tells the reader to look at a figure is followed by one.

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
FORWARD = set()


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


def outputs(path):
    """The outputs of a notebook's code cells, in order: (cell index, output dicts)."""
    nb = json.loads(path.read_text(encoding='utf-8'))
    return [(i, c.get('outputs', [])) for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code']


def test_every_notebook_opens_with_outputs():
    "A reader on GitHub sees what the cells do without running them (index.ipynb is the README, no code)."
    bare = [p.name for p in notebooks() if p.name != 'index.ipynb' and not any(o for _, o in outputs(p))]
    assert len(notebooks()) > 20 and not bare, f"notebooks without any outputs: {bare}"


LOOK = re.compile(r'\b(notice|the figure shows|the plot shows|the picture shows)\b', re.I)


def _has_figure(outs):
    return any('image/png' in o.get('data', {}) or 'image/svg+xml' in o.get('data', {}) or
               'image/gif' in o.get('data', {}) for o in outs)


def test_notice_is_followed_by_a_figure():
    "'Notice ...' or 'the figure shows ...' in a markdown cell: one of the next three code cells shows an image."
    missing, seen = [], 0
    for p in notebooks():
        nb = json.loads(p.read_text(encoding='utf-8'))
        cs = nb['cells']
        for i, c in enumerate(cs):
            if c['cell_type'] != 'markdown' or not LOOK.search(''.join(c['source'])): continue
            seen += 1
            nxt = [d for d in cs[i + 1:] if d['cell_type'] == 'code'][:3]
            if not any(_has_figure(d.get('outputs', [])) for d in nxt):
                missing.append(f"{p.name} cell {i}: {LOOK.search(''.join(c['source'])).group(0)!r}")
    assert seen > 10, f"only {seen} sentences found: the pattern no longer matches the book"
    assert not missing, "no figure after: " + '; '.join(missing)

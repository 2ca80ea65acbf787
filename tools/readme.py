"""Write README.md from nbs/index.ipynb (nbdev_readme needs quarto, which cannot be installed offline).

Usage: python tools/readme.py [--check]   (--check exits 1 if README.md is out of date)
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render():
    """Markdown of the index notebook: markdown cells as they are, code cells fenced with their text outputs."""
    nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            parts.append(src)
        elif not src.startswith('#| hide'):
            parts.append(f'```python\n{src}\n```')
    return '\n\n'.join(parts).strip() + '\n'

if __name__ == '__main__':
    text, path = render(), root / 'README.md'
    if '--check' in sys.argv:
        sys.exit(0 if path.exists() and path.read_text() == text else 1)
    path.write_text(text)

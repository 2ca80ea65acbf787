"""Execute notebooks as nbdev_test does (cells flagged slow or gpu skipped) and save their outputs in place.

Usage: python tools/run_nb.py nbs/12_scaling.ipynb [...]   then nbdev_clean. A slow cell keeps the outputs it had.
"""
import os, re, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory

SKIP = re.compile(r'^#\|\s*(slow|gpu)\b', re.M)

def run(path):
    path = Path(path).resolve()
    nb = read_nb(path)
    skipped = lambda cell: cell.cell_type != 'code' or bool(SKIP.search(cell.source))
    os.environ['IN_TEST'] = '1'
    sh = CaptureShell(path)
    with working_directory(path.parent): sh.run_all(nb, exc_stop=True, preproc=skipped)
    write_nb(nb, path)
    print(f"{path.name}: executed, outputs saved")

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for p in sys.argv[1:]: run(p)

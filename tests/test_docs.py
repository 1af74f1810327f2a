"""The README and the result pages in docs/ stay usable.

* README.md is a front door: at most 200 lines.
* Every relative link of README.md, docs/*.md and benchmarks/README.md
  points at a file that exists (and, for `page.md#anchor`, at a heading of
  that page).
* Every command they name (`python -m experiments.<name>`,
  `benchmarks/<name>.py`, `--config=experiments/configs/<file>.py:<variant>`)
  refers to an existing binary, script, config file and variant.
* The result pages hold no history of earlier runs.
* The README's library example runs and finds the true features (slow).
* `help(xai_jax.attribution)` lists every attribution method with its
  description and the shared calling convention.
* docs/devices.md: its example runs on two (fake CPU) devices and keeps the
  results sharded; the README links the page.
"""

from __future__ import annotations

import os
import pathlib
import pydoc
import re
import subprocess
import sys

import pytest

from xai_jax import attribution

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / 'README.md', ROOT / 'benchmarks' / 'README.md',
                *(ROOT / 'docs').glob('*.md')])
RESULT_PAGES = sorted((ROOT / 'docs').glob('*.md'))

LINK = re.compile(r'\]\(([^)\s]+)\)')
BINARY = re.compile(r'python3? -m (experiments(?:\.\w+)+)')
SCRIPT = re.compile(r'\b(benchmarks/\w+\.py)\b')
CONFIG = re.compile(r'--config=(experiments/configs/\w+\.py)(?::(\w+))?')
HISTORY = re.compile(
    r'previous release|rerun with the current code|\bwas \d[\d.]* before|'
    r'earlier run|before the changes', re.IGNORECASE)


def _ids(paths):
  return [str(p.relative_to(ROOT)) for p in paths]


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's heading anchors of a markdown page."""
  out = set()
  in_code = False
  for line in page.read_text().splitlines():
    if line.startswith('```'):
      in_code = not in_code
    if in_code or not line.startswith('#'):
      continue
    title = line.lstrip('#').strip().lower()
    title = re.sub(r'[^\w\- ]', '', title)
    out.add(title.replace(' ', '-'))
  return out


def test_readme_is_a_front_door():
  lines = (ROOT / 'README.md').read_text().splitlines()
  assert len(lines) <= 200, f'README.md has {len(lines)} lines (> 200)'


def test_result_pages_exist():
  for name in ('l2x.md', 'attribution.md', 'speed.md'):
    assert (ROOT / 'docs' / name).is_file(), name


@pytest.mark.parametrize('page', PAGES, ids=_ids(PAGES))
def test_links_exist(page):
  missing = []
  for target in LINK.findall(page.read_text()):
    if re.match(r'[a-z]+:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      missing.append(target)
    elif anchor and dest.suffix == '.md' and anchor not in _anchors(dest):
      missing.append(target)
  assert not missing, f'{page.name}: broken links {missing}'


@pytest.mark.parametrize('page', PAGES, ids=_ids(PAGES))
def test_commands_refer_to_existing_files(page):
  text = page.read_text()
  missing = []
  for module in BINARY.findall(text):
    path = ROOT.joinpath(*module.split('.'))
    if not path.with_suffix('.py').is_file():
      missing.append(module)
  for script in SCRIPT.findall(text):
    if not (ROOT / script).is_file():
      missing.append(script)
  for config, variant in CONFIG.findall(text):
    path = ROOT / config
    if not path.is_file():
      missing.append(config)
    elif variant and variant not in ('variant',) and (
        f"'{variant}'" not in path.read_text()):
      missing.append(f'{config}:{variant}')
  assert not missing, f'{page.name}: commands name missing files {missing}'


@pytest.mark.parametrize('page', RESULT_PAGES + [ROOT / 'README.md'],
                         ids=_ids(RESULT_PAGES + [ROOT / 'README.md']))
def test_no_history_of_earlier_runs(page):
  found = HISTORY.findall(page.read_text())
  assert not found, f'{page.name}: history of earlier runs: {found}'


def _readme_example() -> str:
  text = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.DOTALL)
  assert blocks, 'README.md has no python example'
  return blocks[0]


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
  script = tmp_path / 'example.py'
  script.write_text(_readme_example())
  out = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, cwd=ROOT, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert lines[1] == '(1000, 10)', lines
  assert lines[2] == '(1000, 10) (1000, 10)', lines
  # L2X's median rank of the 4 true orange-skin features (optimum 2.5).
  assert float(lines[-1]) <= 2.6, lines


# ------------------------------------------------------------ attribution help


def test_attribution_docstring_lists_every_method():
  doc = attribution.__doc__
  assert 'method(model, x, *, target=None' in doc   # the calling convention
  for name in attribution.METHODS:                   # one entry per method
    assert f'* `{name}`:' in doc, f'{name} is not described'
  missing = [name for name in {*attribution.METHODS, *attribution.__all__}
             if not re.search(rf'\b{name}\b', doc)]
  assert not missing, f'xai_jax.attribution.__doc__ does not name {missing}'
  assert set(attribution.METHODS) <= set(attribution.__all__)
  assert all(hasattr(attribution, name) for name in attribution.__all__)


def test_attribution_help_shows_every_method():
  text = pydoc.render_doc(attribution, renderer=pydoc.plaintext)
  functions = text[text.index('FUNCTIONS'):]
  for name in attribution.METHODS:
    assert f'\n    {name}(' in functions, f'help() does not list {name}'


# ------------------------------------------------------------ devices page

DEVICES = ROOT / 'docs' / 'devices.md'


def _devices_example() -> str:
  blocks = re.findall(r'```python\n(.*?)```', DEVICES.read_text(), re.DOTALL)
  blocks = [b for b in blocks if 'make_data_mesh' in b]
  assert len(blocks) == 1, 'docs/devices.md needs one python example'
  return blocks[0]


def test_devices_example_runs(tmp_path):
  script = tmp_path / 'devices_example.py'
  script.write_text(_devices_example())
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  out = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0] == 'devices: 2 cpu', lines
  names = [line.split()[0] for line in lines[1:]]
  assert 'l2x' in names and len(names) >= 4, lines
  assert set(names) - {'l2x'} <= set(attribution.METHODS), names
  for line in lines[1:]:   # 63 rows explained, the result on both devices
    assert line.endswith('(63, 10) 2'), line


def test_readme_links_devices_page():
  assert '](docs/devices.md)' in (ROOT / 'README.md').read_text()

"""House rules of the code base, checked by reading the sources.

* No module uses another module's private (`_name`) function, class or
  constant: `from m import _name` and `m._name` (for `m` an imported module
  of this project) are refused. Private *modules* (`xai_jax._checks`) may be
  imported; their public names are their API.
* Nothing outside `experiments/` imports a binary: the library, the
  benchmarks and the colabs import `xai_jax` only.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ('xai_jax', 'experiments', 'benchmarks')
PACKAGES = ('xai_jax', 'experiments')


def _python_files(*folders: str) -> list[pathlib.Path]:
  out = []
  for folder in folders:
    out.extend(sorted((ROOT / folder).rglob('*.py')))
  return out


def _is_module(dotted: str) -> bool:
  path = ROOT.joinpath(*dotted.split('.'))
  return path.with_suffix('.py').exists() or (path / '__init__.py').exists()


def _own_module(name: str | None) -> bool:
  return bool(name) and name.split('.')[0] in PACKAGES


def _module_of(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix('')
  parts = list(rel.parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def private_uses(source: str, this_module: str) -> list[str]:
  """The private names of other project modules that `source` uses."""
  tree = ast.parse(source)
  aliases: dict[str, str] = {}  # local name -> imported project module
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if _own_module(a.name):
          aliases[a.asname or a.name.split('.')[0]] = (
              a.name if a.asname else a.name.split('.')[0])
    elif isinstance(node, ast.ImportFrom) and _own_module(node.module):
      for a in node.names:
        dotted = f'{node.module}.{a.name}'
        if _is_module(dotted):
          aliases[a.asname or a.name] = dotted
        elif a.name.startswith('_') and node.module != this_module:
          found.append(f'from {node.module} import {a.name}')
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr.startswith('_')
        and not node.attr.startswith('__')):
      target = aliases[node.value.id]
      if target != this_module and not _is_module(f'{target}.{node.attr}'):
        found.append(f'{node.value.id}.{node.attr} ({target})')
  return sorted(set(found))


def test_the_scan_catches_private_uses():
  src = ('from xai_jax import l2x\nfrom xai_jax.l2x import _chunked\n'
         'l2x._init_params\nfrom xai_jax import _checks\n_checks.as_key\n')
  assert private_uses(src, 'benchmarks.x') == [
      'from xai_jax.l2x import _chunked', 'l2x._init_params (xai_jax.l2x)']


@pytest.mark.parametrize(
    'path', _python_files(*SCANNED), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
  assert private_uses(path.read_text(), _module_of(path)) == []


def _imports(source: str) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


def _notebook_sources() -> list[tuple[str, str]]:
  out = []
  for nb in sorted((ROOT / 'colabs').glob('*.ipynb')):
    cells = json.loads(nb.read_text())['cells']
    code = '\n'.join(
        ''.join(c['source']) for c in cells if c['cell_type'] == 'code')
    # Drop notebook magics (`!pip`, `%cd`) that are not Python.
    lines = [l for l in code.splitlines()
             if not l.lstrip().startswith(('!', '%'))]
    out.append((str(nb.relative_to(ROOT)), '\n'.join(lines)))
  return out


_SOURCES = [(str(p.relative_to(ROOT)), p.read_text())
            for p in _python_files('xai_jax', 'benchmarks')]
_SOURCES += _notebook_sources()


@pytest.mark.parametrize('name,source', _SOURCES,
                         ids=[name for name, _ in _SOURCES])
def test_only_experiments_import_the_binaries(name, source):
  bad = sorted(m for m in _imports(source)
               if m == 'experiments' or m.startswith('experiments.'))
  assert not bad, f'{name} imports {bad}'

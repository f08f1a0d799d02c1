"""mkdocs-gen-files script: writes the generated pages (and the study's figure) into the
site at build time, so that they always say what the code says."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))

from reference import ROOT, cli_page, config_reference, methods_page

with mkdocs_gen_files.open("methods/all.md", "w") as page:
    page.write(methods_page())
with mkdocs_gen_files.open("reference/config.md", "w") as page:
    page.write(config_reference())
with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(cli_page())
for figure in (ROOT / "analysis" / "figures").glob("*.png"):
    with mkdocs_gen_files.open(f"assets/{figure.name}", "wb") as out:
        out.write(figure.read_bytes())

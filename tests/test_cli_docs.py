"""docs/cli.md holds the `--help` of every entry point, as the commands print it. It is written by
`python -m semievol_lf.cli_docs` (`make docs`); this test renders the same text in memory and fails on
any difference, so the documented options cannot drift from the code. The test never writes the file.
"""

from conftest import ROOT

from semievol_lf import cli_docs


def test_docs_cli_md_is_every_entry_points_help():
    text = cli_docs.render(ROOT)
    committed = (ROOT / cli_docs.DOC).read_text()
    assert committed == text, "docs/cli.md is stale: run `make docs`"


def test_every_subcommand_has_a_section():
    """docs/cli.md follows semievol_lf.cli.COMMANDS, so a new subcommand gets its section."""
    from semievol_lf.cli import COMMANDS

    documented = {argv[0] for _, argv in cli_docs.sections() if not argv[0].startswith("-")}
    assert documented == set(COMMANDS)

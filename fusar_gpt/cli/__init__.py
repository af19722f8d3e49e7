"""Sub-command parsers and handlers of the ``fusar-gpt`` CLI, grouped by theme (see ``fusar_gpt.__main__``)."""

"""The UserRL importer: the paper's released task files into our dataset layout.

``userrl data import-userrl SRC --out DIR`` calls
:func:`userrl.envs.data_tools.importer.pipeline.import_userrl`. One module per concern:

- :mod:`.reading`: reading the release's JSON and parquet files (every problem a DataError
  naming the file and entry);
- :mod:`.converters`: one ``convert_<gym>`` per gym, and what each gym lacks on imported tasks;
- :mod:`.splits`: the reference's train/test membership, from the parquet prompts;
- :mod:`.pipeline`: which gyms are present, convert, validate, split, write.
"""

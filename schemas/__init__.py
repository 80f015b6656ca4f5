"""Arrow schemas of every table musiclime reads or writes (field docs in the metadata).

- ``schemas.tables.TRACKS``, ``EXPLANATIONS``, ``ERRORS``: written by ``musiclime explain``.
- ``schemas.aggregates.GLOBAL_IMPORTANCE``: written by ``musiclime aggregate``.
- ``schemas.explanations.LOCAL_SCHEMA``: ``Explanation.to_arrow()`` of one track.
- ``schemas.catalogue.CATALOGUE_COLUMNS``: what a catalogue may hold.
"""

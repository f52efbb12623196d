"""Samples out of the database for people: CSV files and downloads, ranges, statistics, graphs' lines.

* :mod:`txm.export.ranges` -- dates and ranges as people write them, the unit page's presets;
* :mod:`txm.export.stats` -- statistics per channel, lines for graphs, the newest sample, pages;
* :mod:`txm.export.csv` -- the CSV format, streamed for ``txm export-csv``, downloads and scripts.

LoggerNet Data Export, the other "export", lives in :mod:`txm.loggernet`.
"""

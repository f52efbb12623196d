"""The database: txm's schema and everything that reads or writes it in bulk.

* :mod:`txm.db.schema` -- the tables (peewee models), bound at run time;
* :mod:`txm.db.database` -- making, opening and creating the database the settings name;
* :mod:`txm.db.sqlite` -- SQLite's write lock and write-ahead log;
* :mod:`txm.db.samples` -- the sample store the TTP server and the LoggerNet client write through;
* :mod:`txm.db.bulk` -- batched operations on many rows;
* :mod:`txm.db.migrate` -- copying a whole installation to another database.
"""

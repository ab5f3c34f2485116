-- Migration 16: a site's uploads with their sizes, which its quota sums at every upload.
CREATE INDEX uploads_by_site ON uploads (site) INCLUDE (size);

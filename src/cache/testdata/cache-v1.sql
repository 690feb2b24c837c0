-- A cache.db as lite-apiserver wrote it at schema version 1 (`sqlite3 cache.db .dump` of a
-- file written by the version-1 code, plus its user_version): two GET answers of kubelet
-- (CN system:node:edge-1), pod default/web-1 and configmap default/app-config, and the
-- complete list of pods in default, split into its envelope and two items.
-- Never edit: the migration tests (src/cache/sqlite.rs, tests/cache_upgrade.rs) prove that
-- all of it is still answered after an upgrade. cache-v1-answers.json lists what it answers.
-- Version 1 created its files with incremental auto-vacuum, before any table.
PRAGMA auto_vacuum=INCREMENTAL;
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE entries(
    key TEXT PRIMARY KEY, identity TEXT NOT NULL, resource TEXT NOT NULL,
    status INTEGER NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL,
    bytes INTEGER NOT NULL, last_access INTEGER NOT NULL);
INSERT INTO entries VALUES(replace('21:cn:system:node:edge-1\n/api/v1/namespaces/default/pods/web-1\n\njson','\n',char(10)),'cn:system:node:edge-1','pods',200,'application/json',X'7b226b696e64223a22506f64222c2261706956657273696f6e223a227631222c226d65746164617461223a7b226e616d65223a227765622d31222c226e616d657370616365223a2264656661756c74222c227265736f7572636556657273696f6e223a223431227d2c2273706563223a7b226e6f64654e616d65223a22656467652d31227d7d0a',219,4);
INSERT INTO entries VALUES(replace('21:cn:system:node:edge-1\n/api/v1/namespaces/default/configmaps/app-config\n\njson','\n',char(10)),'cn:system:node:edge-1','configmaps',200,'application/json',X'7b226b696e64223a22436f6e6669674d6170222c2261706956657273696f6e223a227631222c226d65746164617461223a7b226e616d65223a226170702d636f6e666967222c226e616d657370616365223a2264656661756c74222c227265736f7572636556657273696f6e223a2237227d2c2264617461223a7b226d6f6465223a2265646765227d7d0a',234,3);
CREATE TABLE lists(
    scope TEXT PRIMARY KEY, identity TEXT NOT NULL, resource TEXT NOT NULL,
    content_type TEXT NOT NULL, envelope BLOB NOT NULL, items_at INTEGER NOT NULL,
    resource_version TEXT NOT NULL, bytes INTEGER NOT NULL, last_access INTEGER NOT NULL);
INSERT INTO lists VALUES(replace('21:cn:system:node:edge-1\n/api/v1/namespaces/default/pods\nl=\nf=\njson','\n',char(10)),'cn:system:node:edge-1','pods','application/json',X'7b226b696e64223a22506f644c697374222c2261706956657273696f6e223a227631222c226d65746164617461223a7b227265736f7572636556657273696f6e223a223432227d2c226974656d73223a5b5d7d0a',81,'42',347,2);
CREATE TABLE items(
    scope TEXT NOT NULL, key TEXT NOT NULL, resource_version TEXT NOT NULL,
    json BLOB NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY(scope, key));
INSERT INTO items VALUES(replace('21:cn:system:node:edge-1\n/api/v1/namespaces/default/pods\nl=\nf=\njson','\n',char(10)),'default/web-1','41',X'7b226d65746164617461223a7b226e616d65223a227765622d31222c226e616d657370616365223a2264656661756c74222c227265736f7572636556657273696f6e223a223431227d7d',89);
INSERT INTO items VALUES(replace('21:cn:system:node:edge-1\n/api/v1/namespaces/default/pods\nl=\nf=\njson','\n',char(10)),'default/web-2','40',X'7b226d65746164617461223a7b226e616d65223a227765622d32222c226e616d657370616365223a2264656661756c74222c227265736f7572636556657273696f6e223a223430227d7d',89);
CREATE INDEX entries_by_access ON entries(last_access);
CREATE INDEX lists_by_access ON lists(last_access);
PRAGMA user_version=1;
COMMIT;

-- entry: {"params": [], "kind": "catalog", "columns": [["Name", "name"], ["Version", "text"], ["Schema", "name"], ["Description", "text"]], "rows": [["plpgsql", "1.0", "pg_catalog", "PL/pgSQL procedural language"]]}
SELECT e.extname AS "Name", e.extversion AS "Version", n.nspname AS "Schema", c.description AS "Description"
	FROM pg_catalog.pg_extension e LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace LEFT JOIN pg_catalog.pg_description c ON c.objoid = e.oid AND c.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass
	ORDER BY 1;

-- entry: {"params": [], "kind": "catalog", "columns": [["Name", "name"], ["Owner", "name"]], "rows": [["public", "pg_database_owner"]]}
SELECT n.nspname AS "Name",
	  pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
	FROM pg_catalog.pg_namespace n
	WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
	ORDER BY 1;

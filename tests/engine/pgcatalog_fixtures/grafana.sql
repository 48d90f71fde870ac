-- entry: {"params": [], "kind": "catalog", "columns": [["version", "int4"]], "rows": [["1500"]]}
SELECT current_setting('server_version_num')::int/100 as version
-- entry: {"params": [], "kind": "catalog", "columns": [["extversion", "text"]], "rows": []}
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'
-- entry: {"params": [], "kind": "catalog", "columns": [["name", "name"]], "rows": [["public"]]}
SELECT schema_name AS "name"
	    FROM information_schema.schemata
	    WHERE schema_name NOT IN ('information_schema', 'pg_catalog', 'pg_toast', '_timescaledb_cache',
	                              '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config',
	                              'timescaledb_information', 'timescaledb_experimental')
	    ORDER BY schema_name
-- entry: {"params": [], "kind": "catalog", "columns": [["table", "text"]], "rows": [["cpu"], ["mem"]]}
SELECT quote_ident(table_name) AS "table"
	      FROM information_schema.tables
	      WHERE quote_ident(table_schema) = 'public'
	      ORDER BY 1
-- entry: {"params": [], "kind": "catalog", "columns": [["table", "text"]], "rows": [["cpu"], ["mem"]]}
SELECT
	    CASE WHEN 
	          quote_ident(table_schema) IN (
	          SELECT
	            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
	          FROM
	            generate_series(
	              array_lower(string_to_array(current_setting('search_path'),','),1),
	              array_upper(string_to_array(current_setting('search_path'),','),1)
	            ) as i,
	            string_to_array(current_setting('search_path'),',') s
	          )
	      THEN quote_ident(table_name)
	      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
	    END AS "table"
	    FROM information_schema.tables
	    WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache',
	                             '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config',
	                             'timescaledb_information', 'timescaledb_experimental')
	    ORDER BY CASE WHEN 
	          quote_ident(table_schema) IN (
	          SELECT
	            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
	          FROM
	            generate_series(
	              array_lower(string_to_array(current_setting('search_path'),','),1),
	              array_upper(string_to_array(current_setting('search_path'),','),1)
	            ) as i,
	            string_to_array(current_setting('search_path'),',') s
	          ) THEN 0 ELSE 1 END, 1
-- entry: {"params": [], "kind": "catalog", "columns": [["column", "text"], ["type", "varchar"]], "rows": [["\"time\"", "timestamp without time zone"], ["host", "text"], ["region", "text"], ["usage_user", "double precision"], ["usage_idle", "double precision"], ["requests", "bigint"], ["status", "text"], ["up", "boolean"], ["bytes", "numeric"]]}
SELECT quote_ident(column_name) AS "column", data_type AS "type"
	    FROM information_schema.columns
	    WHERE
	      CASE WHEN array_length(parse_ident('cpu'),1) = 2
	        THEN quote_ident(table_schema) = (parse_ident('cpu'))[1]
	          AND quote_ident(table_name) = (parse_ident('cpu'))[2]
	        ELSE quote_ident(table_name) = 'cpu'
	          AND 
	          quote_ident(table_schema) IN (
	          SELECT
	            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
	          FROM
	            generate_series(
	              array_lower(string_to_array(current_setting('search_path'),','),1),
	              array_upper(string_to_array(current_setting('search_path'),','),1)
	            ) as i,
	            string_to_array(current_setting('search_path'),',') s
	          )
	      END
-- entry: {"params": [], "kind": "catalog", "columns": [["column", "text"], ["type", "varchar"]], "rows": [["\"time\"", "timestamp without time zone"], ["host", "text"], ["used", "double precision"]]}
SELECT quote_ident(column_name) AS "column", data_type AS "type"
	    FROM information_schema.columns
	    WHERE
	      CASE WHEN array_length(parse_ident('public.mem'),1) = 2
	        THEN quote_ident(table_schema) = (parse_ident('public.mem'))[1]
	          AND quote_ident(table_name) = (parse_ident('public.mem'))[2]
	        ELSE quote_ident(table_name) = 'public.mem'
	      END
-- entry: {"params": [], "kind": "catalog", "columns": [["table_name", "text"], ["time_column", "text"], ["value_column", "text"]], "rows": [["cpu", "\"time\"", "usage_user"]]}
SELECT
		quote_ident(table_name) as table_name,
		( SELECT quote_ident(column_name) as column_name FROM information_schema.columns c
	    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name IN ('timestamptz','timestamp')
	    ORDER BY ordinal_position LIMIT 1 ) AS time_column,
	  ( SELECT quote_ident(column_name) AS column_name FROM information_schema.columns c
	    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name='float8'
	    ORDER BY ordinal_position LIMIT 1 ) AS value_column
	FROM information_schema.tables t
	WHERE table_schema IN (
	  SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
	  FROM generate_series(
	      array_lower(string_to_array(current_setting('search_path'),','),1),
	      array_upper(string_to_array(current_setting('search_path'),','),1)
	    ) as i,
	    string_to_array(current_setting('search_path'),',') s
	) AND EXISTS ( SELECT 1 FROM information_schema.columns c
	    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name IN ('timestamptz','timestamp'))
	  AND EXISTS ( SELECT 1 FROM information_schema.columns c
	    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND udt_name='float8')
	LIMIT 1
-- entry: {"params": [], "kind": "catalog", "columns": [["quote_ident", "text"]], "rows": [["bytes"], ["requests"], ["usage_idle"], ["usage_user"]]}
SELECT quote_ident(column_name) FROM information_schema.columns WHERE table_schema IN (
	  SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
	  FROM generate_series(
	      array_lower(string_to_array(current_setting('search_path'),','),1),
	      array_upper(string_to_array(current_setting('search_path'),','),1)
	    ) as i,
	    string_to_array(current_setting('search_path'),',') s
	) AND table_name = 'cpu' AND data_type IN ('bigint','integer','double precision','real','numeric') AND column_name <> 'time' ORDER BY column_name
-- entry: {"params": [], "kind": "catalog", "columns": [["udt_name", "name"]], "rows": [["text"]]}
SELECT udt_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'cpu' AND column_name = 'host'

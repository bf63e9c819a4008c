-- sysbench script for e2e/bench.sh: one connection, prints the TLS version and cipher of
-- the session as MariaDB sees it (SSL_VERSION, SSL_CIPHER), so the report can say what
-- sysbench's own path negotiated. Run with --events=1 --threads=1.
function event()
  local con = sysbench.sql.driver():connect()
  print("tls: " .. con:query_row("SELECT CONCAT((SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'), ' ', (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'))"))
  con:disconnect()
end

import java.sql.*;
public class Capture {
  public static void main(String[] a) throws Exception {
    Connection c = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + a[0] + "/rusts", "rusts", "");
    DatabaseMetaData m = c.getMetaData();
    drain(m.getTables(null, "public", "%", new String[]{"TABLE"}));
    drain(m.getTables(null, null, "%", new String[]{"TABLE", "VIEW"}));
    drain(m.getColumns(null, "public", "cpu", "%"));
    drain(m.getSchemas());
    drain(m.getPrimaryKeys(null, "public", "cpu"));
    drain(m.getIndexInfo(null, "public", "cpu", false, true));
    drain(m.getImportedKeys(null, "public", "cpu"));
    Statement s = c.createStatement();
    drain(s.executeQuery("select time, host, usage_user from cpu limit 1"));
    PreparedStatement p = c.prepareStatement("select host from cpu where host = ?");
    p.setString(1, "a"); drain(p.executeQuery());
    c.close();
  }
  static void drain(ResultSet r) throws Exception { ResultSetMetaData md = r.getMetaData(); while (r.next()) { for (int i = 1; i <= md.getColumnCount(); i++) r.getString(i); } r.close(); }
}

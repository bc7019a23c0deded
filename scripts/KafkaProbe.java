// Waits until a Kafka broker answers a metadata request, then exits 0.
// Run as a single-file program:
//   java -cp "LIBS/*" KafkaProbe.java HOST:PORT SECONDS
//   java -cp "LIBS/*" KafkaProbe.java HOST:PORT SECONDS scram USER PASSWORD SASL_HOST:PORT CA.pem
// The second form then creates (or updates) the SCRAM-SHA-512 and -256
// credentials of USER through the plain listener, and waits until USER can
// log in through the SASL_SSL listener, trusting only CA.pem.
// Exits 1 with a message when the deadline passes first.
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

public class KafkaProbe {
    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:9092";
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(args.length > 1 ? Long.parseLong(args[1]) : 60);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        try (Admin admin = Admin.create(props)) {
            waitForMetadata(admin, bootstrap, deadline);
            if (args.length >= 7 && args[2].equals("scram")) {
                String user = args[3], password = args[4];
                // One request per mechanism: the broker refuses two
                // alterations of one user in a request.
                for (ScramMechanism mechanism : new ScramMechanism[] {ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256}) {
                    admin.alterUserScramCredentials(Arrays.asList(
                            new UserScramCredentialUpsertion(user, new ScramCredentialInfo(mechanism, 8192), password)))
                        .all().get(30, TimeUnit.SECONDS);
                }
                Properties sasl = new Properties();
                sasl.putAll(props);
                sasl.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[5]);
                sasl.put("security.protocol", "SASL_SSL");
                sasl.put("sasl.mechanism", "SCRAM-SHA-512");
                sasl.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                        + user + "\" password=\"" + password + "\";");
                sasl.put("ssl.truststore.type", "PEM");
                sasl.put("ssl.truststore.location", args[6]);
                try (Admin secured = Admin.create(sasl)) {
                    waitForMetadata(secured, args[5] + " (SASL_SSL, SCRAM-SHA-512 as " + user + ")", deadline);
                }
            }
        }
    }

    static void waitForMetadata(Admin admin, String what, long deadline) throws InterruptedException {
        String last = "no answer yet";
        while (System.nanoTime() < deadline) {
            try {
                int nodes = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000)).nodes().get().size();
                if (nodes > 0) {
                    System.out.println("broker at " + what + " answered metadata (" + nodes + " node)");
                    return;
                }
            } catch (Exception e) {
                last = String.valueOf(e.getCause() != null ? e.getCause() : e);
            }
            Thread.sleep(250);
        }
        System.err.println("broker at " + what + " did not answer metadata in time: " + last);
        System.exit(1);
    }
}

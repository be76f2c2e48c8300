// A JVM client as the AWS SDK for Java finds credentials, on the JDK's own HTTP stacks and the
// JVM's default (dual-stack IPv6) sockets, then asks STS who it is and prints the ARN.
//
//   java JdkWhoAmI.java urlconnection|httpclient
//
// The credential lookup follows the SDK's providers (v1 and v2 alike): the container endpoint
// when AWS_CONTAINER_CREDENTIALS_FULL_URI is set (the token from
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, else AWS_CONTAINER_AUTHORIZATION_TOKEN), otherwise
// IMDSv2 (a session token, the role name, the role's credentials) at
// AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254, unless
// AWS_EC2_METADATA_DISABLED is true. The STS call is signed with Signature Version 4 and sent
// to AWS_ENDPOINT_URL. The JDK has no JSON or SigV4 of its own, so both are written out here;
// the SDK itself cannot be installed offline (Maven Central is out of reach).

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class JdkWhoAmI {
    /** One HTTP exchange: status and body. */
    record Answer(int status, String body) {}

    /** The JDK stack every request of this run goes through. */
    interface Stack {
        Answer send(String method, String url, Map<String, String> headers, String body)
                throws Exception;
    }

    /** java.net.HttpURLConnection: what the SDK's credential providers use. */
    static final Stack URL_CONNECTION = (method, url, headers, body) -> {
        HttpURLConnection connection = (HttpURLConnection) URI.create(url).toURL().openConnection();
        connection.setRequestMethod(method);
        connection.setConnectTimeout(2000);
        connection.setReadTimeout(5000);
        headers.forEach(connection::setRequestProperty);
        if (body != null) {
            connection.setDoOutput(true);
            try (OutputStream out = connection.getOutputStream()) {
                out.write(body.getBytes(StandardCharsets.UTF_8));
            }
        }
        int status = connection.getResponseCode();
        InputStream in = status < 400 ? connection.getInputStream() : connection.getErrorStream();
        return new Answer(status, in == null ? "" : readAll(in));
    };

    /** java.net.http.HttpClient, as the JDK builds it by default (HTTP/2 offered, then 1.1). */
    static Stack httpClient() {
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
        return (method, url, headers, body) -> {
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url))
                    .timeout(Duration.ofSeconds(5))
                    .method(method, body == null
                            ? HttpRequest.BodyPublishers.noBody()
                            : HttpRequest.BodyPublishers.ofString(body));
            headers.forEach(request::header);
            HttpResponse<String> response =
                    client.send(request.build(), HttpResponse.BodyHandlers.ofString());
            return new Answer(response.statusCode(), response.body());
        };
    }

    public static void main(String[] args) throws Exception {
        Stack stack = switch (args.length == 1 ? args[0] : "") {
            case "urlconnection" -> URL_CONNECTION;
            case "httpclient" -> httpClient();
            default -> throw new IllegalArgumentException("usage: JdkWhoAmI urlconnection|httpclient");
        };
        String credentials = System.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") != null
                ? fromContainerEndpoint(stack)
                : fromInstanceMetadata(stack);
        String arn = callerIdentity(stack, credentials);
        System.out.println(arn);
    }

    static String fromContainerEndpoint(Stack stack) throws Exception {
        String uri = System.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
        String tokenFile = System.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
        String token = tokenFile != null
                ? Files.readString(Path.of(tokenFile)).trim()
                : System.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        Map<String, String> headers = new TreeMap<>();
        if (token != null) {
            headers.put("Authorization", token);
        }
        return required(stack.send("GET", uri, headers, null), "container credentials");
    }

    static String fromInstanceMetadata(Stack stack) throws Exception {
        if ("true".equalsIgnoreCase(System.getenv("AWS_EC2_METADATA_DISABLED"))) {
            throw new IllegalStateException("no credentials: the instance metadata is disabled");
        }
        String endpoint = System.getenv().getOrDefault(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254");
        endpoint = endpoint.replaceAll("/+$", "");
        String session = required(stack.send("PUT", endpoint + "/latest/api/token",
                Map.of("x-aws-ec2-metadata-token-ttl-seconds", "21600"), null), "metadata token");
        Map<String, String> withSession = Map.of("x-aws-ec2-metadata-token", session);
        String base = endpoint + "/latest/meta-data/iam/security-credentials/";
        String role = required(stack.send("GET", base, withSession, null), "role name")
                .lines().findFirst().orElseThrow().trim();
        return required(stack.send("GET", base + role, withSession, null), "role credentials");
    }

    static String required(Answer answer, String what) {
        if (answer.status() != 200) {
            throw new IllegalStateException(what + ": HTTP " + answer.status() + ": " + answer.body());
        }
        return answer.body();
    }

    /** sts:GetCallerIdentity, signed with the credentials in the JSON `credentials`. */
    static String callerIdentity(Stack stack, String credentials) throws Exception {
        String accessKey = field(credentials, "AccessKeyId");
        String secretKey = field(credentials, "SecretAccessKey");
        String sessionToken = field(credentials, "Token");
        String endpoint = System.getenv().getOrDefault("AWS_ENDPOINT_URL", "https://sts.amazonaws.com");
        URI uri = URI.create(endpoint.replaceAll("/+$", "") + "/");
        String host = uri.getPort() == -1 ? uri.getHost() : uri.getHost() + ":" + uri.getPort();
        String body = "Action=GetCallerIdentity&Version=2011-06-15";
        ZonedDateTime now = ZonedDateTime.now(ZoneOffset.UTC);
        String amzDate = now.format(DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'"));
        String day = amzDate.substring(0, 8);
        String region = "us-east-1";
        String scope = day + "/" + region + "/sts/aws4_request";

        TreeMap<String, String> signed = new TreeMap<>();
        signed.put("content-type", "application/x-www-form-urlencoded; charset=utf-8");
        signed.put("host", host);
        signed.put("x-amz-date", amzDate);
        signed.put("x-amz-security-token", sessionToken);
        StringBuilder canonicalHeaders = new StringBuilder();
        signed.forEach((name, value) -> canonicalHeaders.append(name).append(':').append(value).append('\n'));
        String signedHeaders = String.join(";", signed.keySet());
        String canonicalRequest = String.join("\n", "POST", "/", "", canonicalHeaders.toString(),
                signedHeaders, hex(sha256(body.getBytes(StandardCharsets.UTF_8))));
        String stringToSign = String.join("\n", "AWS4-HMAC-SHA256", amzDate, scope,
                hex(sha256(canonicalRequest.getBytes(StandardCharsets.UTF_8))));
        byte[] key = hmac(("AWS4" + secretKey).getBytes(StandardCharsets.UTF_8), day);
        key = hmac(key, region);
        key = hmac(key, "sts");
        key = hmac(key, "aws4_request");
        String signature = hex(hmac(key, stringToSign));

        Map<String, String> headers = new TreeMap<>();
        headers.put("Content-Type", signed.get("content-type"));
        headers.put("X-Amz-Date", amzDate);
        headers.put("X-Amz-Security-Token", sessionToken);
        headers.put("Authorization", "AWS4-HMAC-SHA256 Credential=" + accessKey + "/" + scope
                + ", SignedHeaders=" + signedHeaders + ", Signature=" + signature);
        String answer = required(stack.send("POST", uri.toString(), headers, body), "GetCallerIdentity");
        Matcher arn = Pattern.compile("<Arn>([^<]+)</Arn>").matcher(answer);
        if (!arn.find()) {
            throw new IllegalStateException("no Arn in STS's answer: " + answer);
        }
        return arn.group(1);
    }

    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"([^\"]*)\"").matcher(json);
        if (!m.find()) {
            throw new IllegalStateException("no " + name + " in the credentials");
        }
        return m.group(1);
    }

    static String readAll(InputStream in) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        in.transferTo(out);
        return out.toString(StandardCharsets.UTF_8);
    }

    static byte[] sha256(byte[] data) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(data);
    }

    static byte[] hmac(byte[] key, String data) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
    }

    static String hex(byte[] bytes) {
        StringBuilder text = new StringBuilder();
        for (byte b : bytes) {
            text.append(String.format("%02x", b));
        }
        return text.toString();
    }
}

package initiator

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort is the IANA port of iSCSI (RFC 7143 §13.3 TargetAddress).
const DefaultPort = 3260

// URL is a libiscsi-style address of a logical unit:
//
//	iscsi://[user[%password]@]host[:port]/target-iqn/lun
//
// the form qemu and libiscsi take, so that operators can paste what they
// already use. The password is better given another way (a file), since a
// URL ends up in shell history and process listings.
type URL struct {
	User     string
	Password string
	Host     string // host name or IP address, without brackets
	Port     int
	Target   string
	LUN      uint16
}

// maxLUN is the largest LUN that peripheral or flat space addressing
// expresses (SAM-5 §4.7, pdu.LUNFromNumber).
const maxLUN = 16383

// ParseURL parses an iscsi:// URL. Errors never include the password.
func ParseURL(s string) (*URL, error) {
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return nil, fmt.Errorf("iSCSI URL must start with iscsi://")
	}
	if strings.ContainsAny(rest, "?#") {
		return nil, fmt.Errorf("iSCSI URL: query and fragment are not supported")
	}
	authority, path, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, fmt.Errorf("iSCSI URL lacks /target-iqn/lun")
	}
	u := &URL{Port: DefaultPort}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		u.User, u.Password, _ = strings.Cut(authority[:at], "%")
		authority = authority[at+1:]
		if u.User == "" {
			return nil, fmt.Errorf("iSCSI URL: empty user name before @")
		}
	}
	if err := u.parseHostPort(authority); err != nil {
		return nil, err
	}
	slash := strings.LastIndexByte(path, '/')
	if slash <= 0 {
		return nil, fmt.Errorf("iSCSI URL path %q is not /target-iqn/lun", path)
	}
	u.Target = path[:slash]
	if err := checkName(u.Target); err != nil {
		return nil, fmt.Errorf("iSCSI URL: %w", err)
	}
	lun, err := strconv.ParseUint(path[slash+1:], 10, 16)
	if err != nil || lun > maxLUN {
		return nil, fmt.Errorf("iSCSI URL: LUN %q is not a number in 0..%d", path[slash+1:], maxLUN)
	}
	u.LUN = uint16(lun)
	return u, nil
}

func (u *URL) parseHostPort(authority string) error {
	if authority == "" {
		return fmt.Errorf("iSCSI URL lacks a host")
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return fmt.Errorf("iSCSI URL: unterminated [ in host %q", authority)
		}
		host, port = authority[1:end], authority[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return fmt.Errorf("iSCSI URL: junk after ] in host %q", authority)
		}
		port = strings.TrimPrefix(port, ":")
		if net.ParseIP(host) == nil {
			return fmt.Errorf("iSCSI URL: %q is not an IPv6 address", host)
		}
	} else {
		if i := strings.LastIndexByte(authority, ':'); i >= 0 {
			host, port = authority[:i], authority[i+1:]
		}
		if host == "" || strings.ContainsAny(host, " /:[]%@") {
			return fmt.Errorf("iSCSI URL: invalid host %q", host)
		}
	}
	u.Host = host
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("iSCSI URL: invalid port %q", port)
		}
		u.Port = int(p)
	}
	return nil
}

// checkName accepts iSCSI names as §4.2.7 allows them on the wire: no
// empty name, at most 223 bytes, no control characters or spaces.
func checkName(name string) error {
	if name == "" || len(name) > 223 {
		return fmt.Errorf("target name must be 1 to 223 bytes")
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c == 0x7f || c == '/' {
			return fmt.Errorf("target name %q has an invalid character", name)
		}
	}
	return nil
}

// Addr is host:port, ready for net.Dial.
func (u *URL) Addr() string { return net.JoinHostPort(u.Host, strconv.Itoa(u.Port)) }

// String renders the URL without the password.
func (u *URL) String() string {
	var b strings.Builder
	b.WriteString("iscsi://")
	if u.User != "" {
		b.WriteString(u.User)
		b.WriteByte('@')
	}
	host := u.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	fmt.Fprintf(&b, "%s:%d/%s/%d", host, u.Port, u.Target, u.LUN)
	return b.String()
}

// Redact hides the password of an iscsi:// URL, for messages about a URL
// that may not even parse. Other strings come back unchanged.
func Redact(s string) string {
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return s
	}
	authority, _, _ := strings.Cut(rest, "/")
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(authority[:at], "%")
	if !hasPassword {
		return s
	}
	return "iscsi://" + user + "%<redacted>" + rest[at:]
}

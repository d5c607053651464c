package domainxml

// NetworkToFiles turns the network disks whose <source name> is a key of
// files into file disks on the path it maps to. In each such disk the
// type attribute becomes 'file', <source> becomes <source file='PATH'/>
// and a disk-level <auth> is removed; everything else (driver, whose
// format the caller vouches for, target, serial, address, boot order) is
// kept. It returns the document and how many disks it changed.
func NetworkToFiles(domain []byte, files map[string]string) ([]byte, int, error) {
	disks, err := Disks(domain)
	if err != nil {
		return nil, 0, err
	}
	var edits []Edit
	changed := 0
	for _, d := range disks {
		path, ok := files[d.SourceName]
		if d.Type != "network" || !d.HasSource || !ok {
			continue
		}
		tag, err := SetAttr(domain[d.Tag.Start:d.Tag.End], "type", "file")
		if err != nil {
			return nil, 0, err
		}
		q := string(QuoteOf(tag))
		edits = append(edits, Edit{d.Tag, tag}, Edit{d.Source, []byte("<source file=" + q + EscapeAttr(path) + q + "/>")})
		for _, a := range d.Auths {
			edits = append(edits, Edit{a, nil})
		}
		changed++
	}
	return Apply(domain, edits), changed, nil
}

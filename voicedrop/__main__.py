from voicedrop.cli import main

raise SystemExit(main())

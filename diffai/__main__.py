from diffai.cli import main

raise SystemExit(main())
